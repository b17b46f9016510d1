package ssefeed_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/internal/ssefeed"
)

// invalidations records what the feed told its invalidator, in order.
type invalidations struct {
	mu    sync.Mutex
	calls []string
}

func (r *invalidations) MemoryChanged(id, typ string) { r.add("memory " + typ + " " + id) }
func (r *invalidations) GalleryChanged(id string)     { r.add("gallery " + id) }
func (r *invalidations) Following(on bool)            { r.add(fmt.Sprint("following ", on)) }

func (r *invalidations) add(s string) {
	r.mu.Lock()
	r.calls = append(r.calls, s)
	r.mu.Unlock()
}

func (r *invalidations) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

var _ ssefeed.Invalidator = (*invalidations)(nil)

// TestFeed_Invalidator: the feed passes live edge events (both memories of an
// edge that moved) and gallery status events to the invalidator, says when it
// follows the stream and when it stops, and passes nothing of the past: the
// Following(true) of its subscription stands for that. Gallery status events
// never reach the SSE hub.
func TestFeed_Invalidator(t *testing.T) {
	c := newCluster(t)
	const (
		m1 = "11111111-1111-4111-8111-111111111111"
		m2 = "22222222-2222-4222-8222-222222222222"
		g1 = "33333333-3333-4333-8333-333333333333"
	)
	edge := func(n int, memID, beforeID string) string {
		id := fmt.Sprintf("edgesync/%d/0", n)
		before := "null"
		if beforeID != "" {
			before = fmt.Sprintf(`{"memory_id":%q,"memory_type":"image","backend":"neon-db"}`, beforeID)
		}
		c.store(subjects.Edge(domain.BackendNeon, "updated"), id, fmt.Sprintf(
			`{"id":%q,"op":"updated","memory_id":%q,"memory_type":"image","backend":"neon-db","artifact":"metadata","before":%s,"after":{"memory_id":%q,"memory_type":"image","backend":"neon-db"}}`,
			id, memID, before, memID))
		return id
	}
	edge(1, m2, "") // before the feed starts: past

	rec := &invalidations{}
	p := c.idlePod(t)
	nc := c.srv.Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	p.feed = ssefeed.New(ssefeed.Config{Stream: streamName, Subjects: subjects, RetryMax: 200 * time.Millisecond, Invalidator: rec},
		js, p.api.Events(), nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.feed.Run(ctx) }()
	eventually(t, 10*time.Second, "the feed caught up", p.feed.CaughtUp)
	ch, _ := p.stream(t, "")

	c.store(subjects.GalleryStatus(), "gallery/"+g1+"/1/partial", fmt.Sprintf(`{"gallery_id":%q,"old_status":null,"new_status":"partial"}`, g1))
	last := edge(2, m1, m2) // the edge moved from m2 to m1
	// Edge events that name no memory (not JSON; a null key): the cache
	// cannot tell what they changed and starts over.
	c.store(subjects.Edge(domain.BackendNeon, "updated"), "edgesync/3/0", `not json`)
	c.store(subjects.Edge(domain.BackendNeon, "updated"), "edgesync/4/0", `{"id":"edgesync/4/0","op":"updated","memory_id":null,"memory_type":"image"}`)
	want := []string{"following true", "gallery " + g1, "memory image " + m1, "memory image " + m2, "following true", "following true"}
	eventually(t, 10*time.Second, "the invalidations", func() bool { return len(rec.list()) >= len(want) })
	if got := rec.list(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("invalidations %q\nwant %q", got, want)
	}
	if evs := take(t, ch, 1); evs[0].name != "sync" || evs[0].id != last {
		t.Fatalf("the stream client got %v first; want the edge event %s (gallery status events are not sync-status events)", evs, last)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "Following(false) after the feed stopped", func() bool {
		got := rec.list()
		return got[len(got)-1] == "following false"
	})
}
