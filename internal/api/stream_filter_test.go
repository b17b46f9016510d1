package api

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/internal/natstest"
	"github.com/edgesync/edgesync/internal/ssefeed"
)

// memEnvelope is an edge event of one memory, as the pipeline publishes it.
func memEnvelope(id, memID, typ, state string) []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"op":"updated","memory_id":%q,"memory_type":%q,"backend":"icp-canister","artifact":"metadata","before":null,"after":{"backend":"icp-canister","sync_state":%q,"present":false}}`,
		id, memID, typ, state))
}

func TestSyncStream_FilterParametersRefusedBeforeTheStream(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct {
		query string
		code  int
		name  string
	}{
		{"gallery=nope", 400, "gallery"},
		{"gallery=" + strings.ToUpper(uuid.NewString()), 400, "gallery"},
		{"memory=123", 400, "memory"},
		{"memory=" + uuid.NewString() + "&gallery=x", 400, "gallery"},
		{"gallery=" + uuid.NewString(), 404, "gallery"}, // no such gallery
	} {
		status, body, h := e.do("GET", "/api/storage/sync-status/stream?"+tc.query, "", nil)
		msg, _ := body["error"].(map[string]any)["message"].(string)
		if status != tc.code || !strings.HasPrefix(h.Get("Content-Type"), "application/json") || !strings.HasPrefix(msg, tc.name) {
			t.Errorf("?%s = %d %s %v; want %d naming %s", tc.query, status, h.Get("Content-Type"), body, tc.code, tc.name)
		}
	}
	if n := e.srv.Events().Clients(); n != 0 {
		t.Fatalf("%d stream clients after refusals", n)
	}
	if n := e.srv.members.Entries(); n != 0 {
		t.Fatalf("%d gallery items held after refusals", n)
	}
}

// TestSyncStream_FilterByMemory: a client of one memory gets that memory's
// edge changes and upload progress, none of another's.
func TestSyncStream_FilterByMemory(t *testing.T) {
	e := newEnv(t, nil)
	hub := e.srv.Events()
	mine, theirs := uuid.NewString(), uuid.NewString()
	ch, cancel := sseClient(t, e.http.URL+"/api/storage/sync-status/stream?memory="+mine, "")
	defer cancel()
	all, cancelAll := sseClient(t, e.http.URL+"/api/storage/sync-status/stream", "")
	defer cancelAll()
	eventually(t, 5*time.Second, "two clients", func() bool { return hub.Clients() == 2 })

	hub.Publish("m/1", memEnvelope("m/1", theirs, "image", "migrating"))
	hub.Publish("m/2", memEnvelope("m/2", mine, "image", "migrating"))
	hub.PublishEvent("progress", "", []byte(`{"memory_id":"`+theirs+`","memory_type":"image","bytes_done":1,"bytes_total":2}`))
	hub.PublishEvent("progress", "", []byte(`{"memory_id":"`+mine+`","memory_type":"image","bytes_done":1,"bytes_total":2}`))
	hub.Publish("m/3", memEnvelope("m/3", theirs, "image", "idle"))
	hub.Publish("m/4", memEnvelope("m/4", mine, "image", "idle"))
	for _, want := range []string{"sync m/2 " + mine, "progress  " + mine, "sync m/4 " + mine} {
		ev := next(t, ch)
		if got := ev.name + " " + ev.id + " "; !strings.HasPrefix(want, got) || !strings.Contains(ev.data, mine) {
			t.Fatalf("got %+v, want %s", ev, want)
		}
	}
	// The unfiltered client got all six: the filtered one's silence is the filter's.
	for i := 0; i < 6; i++ {
		next(t, all)
	}
	// And a resume from the ring filters the same way.
	resumed, cancelResumed := sseClient(t, e.http.URL+"/api/storage/sync-status/stream?memory="+mine, "m/1")
	defer cancelResumed()
	for _, want := range []string{"m/2", "", "m/4"} {
		if ev := next(t, resumed); ev.id != want || !strings.Contains(ev.data, mine) {
			t.Fatalf("resumed: got %+v, want id %q of %s", ev, want, mine)
		}
	}
}

// feedFromNATS runs the daemon's stream shape for the test's hub: a real
// NATS server with the stream, and the feed that reads it into the hub.
func feedFromNATS(t *testing.T, e *env) jetstream.JetStream {
	t.Helper()
	nc := natstest.Start(t).Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	subjects := domain.Subjects{Prefix: "edgesync"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EDGESYNC", Subjects: subjects.Stream(),
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	feed := ssefeed.New(ssefeed.Config{Stream: "EDGESYNC", Subjects: subjects}, js, e.srv.Events(), nil, nil)
	fctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- feed.Run(fctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("feed: %v", err)
		}
	})
	eventually(t, 10*time.Second, "the feed caught up", feed.CaughtUp)
	return js
}

// TestSyncStream_FilterByGallery: edge events come through JetStream and the
// feed, as on every instance; a client of a gallery gets its items' events
// and no others', follows items added to and removed from the gallery within
// the refresh interval, and clients of one gallery share one item set.
func TestSyncStream_FilterByGallery(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *Deps) { c.SSEGalleryRefresh = 50 * time.Millisecond })
	js := feedFromNATS(t, e)
	hub := e.srv.Events()
	img, note, outsider := e.image(nil), e.note(), e.note()
	g := e.gallery([2]string{img, "image"}, [2]string{note, "note"})
	seq := 0
	publish := func(memID, typ string) string {
		t.Helper()
		seq++
		id := fmt.Sprintf("edgesync/gallery-test/%d", seq)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := js.Publish(ctx, "edgesync.edge.icp-canister.updated", memEnvelope(id, memID, typ, "migrating"), jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
		return id
	}
	url := e.http.URL + "/api/storage/sync-status/stream?gallery=" + g
	ch, cancel := sseClient(t, url, "")
	defer cancel()
	ch2, cancel2 := sseClient(t, url+"&state=migrating", "")
	defer cancel2()
	eventually(t, 5*time.Second, "two clients", func() bool { return hub.Clients() == 2 })
	if n := e.srv.members.Entries(); n != 2 {
		t.Fatalf("%d gallery items held for two clients of one 2-item gallery, want 2 (shared)", n)
	}

	publish(outsider, "note")
	first := publish(img, "image")
	publish(note, "image") // the note's id with another type: not the item
	publish(uuid.NewString(), "image")
	second := publish(note, "note")
	for _, c := range []<-chan sseEvent{ch, ch2} {
		for _, want := range []string{first, second} {
			if ev := next(t, c); ev.id != want {
				t.Fatalf("got %+v, want %s (only the gallery's items)", ev, want)
			}
		}
	}

	// The outsider joins the gallery, the image leaves it: within the
	// refresh interval the filter follows. Each probe publishes an event of
	// the outsider, then one of the note (always an item) as a marker: the
	// first event received tells whether the outsider's passed.
	e.exec(`INSERT INTO gallery_items (gallery_id, memory_id, memory_type) VALUES ($1, $2, 'note')`, g, outsider)
	e.exec(`DELETE FROM gallery_items WHERE gallery_id = $1 AND memory_id = $2`, g, img)
	probe := func(memID, typ string) bool {
		t.Helper()
		probeID := publish(memID, typ)
		marker := publish(note, "note")
		ev := next(t, ch)
		if ev.id == probeID {
			if m := next(t, ch); m.id != marker {
				t.Fatalf("after the probe got %+v, want the marker %s", m, marker)
			}
			return true
		}
		if ev.id != marker {
			t.Fatalf("got %+v, want the probe %s or the marker %s", ev, probeID, marker)
		}
		return false
	}
	eventually(t, 10*time.Second, "the outsider's events reach the gallery's client", func() bool { return probe(outsider, "note") })
	eventually(t, 10*time.Second, "the removed image's events stop", func() bool { return !probe(img, "image") })
	if probe(img, "image") {
		t.Fatal("the removed image's events came back")
	}

	// The set is dropped with its last client.
	cancel()
	for range ch {
	}
	cancel2()
	for range ch2 {
	}
	eventually(t, 5*time.Second, "no gallery items held", func() bool { return e.srv.members.Entries() == 0 && hub.Clients() == 0 })
}

// TestSyncStream_GalleryBudget: an instance holds at most SSEGalleryMembers
// items for gallery streams; a gallery that does not fit is refused with 503
// and Retry-After, and takes nothing.
func TestSyncStream_GalleryBudget(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *Deps) { c.SSEGalleryMembers = 3 })
	small := e.gallery([2]string{e.note(), "note"}, [2]string{e.note(), "note"})
	big := e.gallery([2]string{e.note(), "note"}, [2]string{e.note(), "note"})
	_, cancel := sseClient(t, e.http.URL+"/api/storage/sync-status/stream?gallery="+small, "")
	defer cancel()
	eventually(t, 5*time.Second, "one client", func() bool { return e.srv.Events().Clients() == 1 })
	status, body, h := e.do("GET", "/api/storage/sync-status/stream?gallery="+big, "", nil)
	if status != 503 || errCode(body) != "too_many_clients" || h.Get("Retry-After") == "" {
		t.Fatalf("a gallery past the budget: %d %v Retry-After=%q; want 503 too_many_clients", status, body, h.Get("Retry-After"))
	}
	if n := e.srv.members.Entries(); n != 2 {
		t.Fatalf("%d items held, want 2 (the refused gallery took nothing)", n)
	}
	// Another client of the held gallery costs nothing more.
	_, cancel2 := sseClient(t, e.http.URL+"/api/storage/sync-status/stream?gallery="+small, "")
	defer cancel2()
	eventually(t, 5*time.Second, "two clients", func() bool { return e.srv.Events().Clients() == 2 })
	if n := e.srv.members.Entries(); n != 2 {
		t.Fatalf("%d items held, want 2", n)
	}
}
