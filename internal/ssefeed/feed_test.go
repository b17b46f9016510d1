package ssefeed_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/internal/api"
	"github.com/edgesync/edgesync/internal/natstest"
	"github.com/edgesync/edgesync/internal/ssefeed"
	"github.com/edgesync/edgesync/internal/ssetest"
)

const streamName = "EDGESYNC"

var subjects = domain.Subjects{Prefix: "edgesync"}

// cluster is one real NATS server with the stream, and a publisher on it.
type cluster struct {
	t   *testing.T
	srv *natstest.Server
	nc  *nats.Conn
	js  jetstream.JetStream
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	s := natstest.Start(t)
	nc := s.Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: streamName, Subjects: subjects.Stream(),
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	return &cluster{t: t, srv: s, nc: nc, js: js}
}

// edge stores edge event i (msg id edgesync/<i>/0), retrying while NATS is
// coming back; the same id again is a duplicate JetStream drops.
func (c *cluster) edge(i int) string {
	c.t.Helper()
	id := fmt.Sprintf("edgesync/%d/0", i)
	data := fmt.Sprintf(`{"id":%q,"op":"updated","memory_id":"m%d","memory_type":"image","backend":"icp-canister","artifact":"asset","before":null,"after":{"backend":"icp-canister","sync_state":"migrating"}}`, id, i)
	c.store(subjects.Edge(domain.BackendICP, "updated"), id, data)
	return id
}

// memory stores a memory event, which the feed must not pass on.
func (c *cluster) memory(i int) {
	c.t.Helper()
	id := fmt.Sprintf("edgesync/%d/1", i)
	c.store(subjects.Memory("image", "updated"), id, fmt.Sprintf(`{"id":%q,"op":"updated"}`, id))
}

// progress publishes an ICP upload progress event as the mirror does: core
// NATS, no msg id, captured by the stream.
func (c *cluster) progress(done int) {
	c.t.Helper()
	body := fmt.Sprintf(`{"memory_id":"m1","memory_type":"image","bytes_done":%d,"bytes_total":100}`, done)
	// A request to the stream subject returns its PubAck, so the test knows
	// it is stored (the mirror's fire-and-forget publish needs no ack).
	c.store(subjects.SyncProgress(), "", body)
}

func (c *cluster) store(subject, id, data string) {
	c.t.Helper()
	var opts []jetstream.PublishOpt
	if id != "" {
		opts = append(opts, jetstream.WithMsgID(id))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.js.Publish(ctx, subject, []byte(data), opts...)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("publish %s %s: %v", subject, id, err)
		}
		time.Sleep(50 * time.Millisecond) // NATS is restarting: retry the publish, not an assertion
	}
}

func (c *cluster) streamCreated() time.Time {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		st, err := c.js.Stream(ctx, streamName)
		if err == nil {
			return st.CachedInfo().Created
		}
		if ctx.Err() != nil {
			c.t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // NATS is coming back
	}
}

// pod is one instance's HTTP API and feed, with its own NATS connection.
type pod struct {
	api  *api.Server
	http *httptest.Server
	feed *ssefeed.Feed
}

func (c *cluster) pod(t *testing.T) *pod {
	t.Helper()
	p := c.idlePod(t)
	p.start(t)
	return p
}

// idlePod is a pod whose feed has not started yet.
func (c *cluster) idlePod(t *testing.T) *pod {
	t.Helper()
	nc := c.srv.Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.New(api.Config{SSEReplay: 1000, SSEKeepAlive: time.Minute}, api.Deps{})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		srv.Events().Close()
		hs.Close()
	})
	feed := ssefeed.New(ssefeed.Config{Stream: streamName, Subjects: subjects, RetryMax: 200 * time.Millisecond}, js, srv.Events(), nil, nil)
	return &pod{api: srv, http: hs, feed: feed}
}

// start runs the feed until the end of the test and waits until it caught up.
func (p *pod) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.feed.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("feed.Run: %v", err)
		}
	})
	eventually(t, 10*time.Second, "the feed caught up with the stream", p.feed.CaughtUp)
}

type sseEvent struct{ name, id, data string }

// stream opens GET /api/storage/sync-status/stream and hands its events (not
// comments) over a channel; wait returns once the hub counts the client.
func (p *pod) stream(t *testing.T, lastID string) (<-chan sseEvent, func()) {
	t.Helper()
	before := p.api.Events().Clients()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", p.http.URL+"/api/storage/sync-status/stream", nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("stream answered %d", resp.StatusCode)
	}
	ch := make(chan sseEvent, 4096)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(ch)
		defer resp.Body.Close()
		ssetest.Scan(resp.Body, false, func(e ssetest.Event) { ch <- sseEvent{name: e.Name, id: e.ID, data: e.Data} })
	}()
	eventually(t, 5*time.Second, "the stream client registered", func() bool { return p.api.Events().Clients() > before })
	stop := func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	return ch, stop
}

// take reads n events, failing after a deadline.
func take(t *testing.T, ch <-chan sseEvent, n int) []sseEvent {
	t.Helper()
	out := make([]sseEvent, 0, n)
	deadline := time.After(20 * time.Second)
	for len(out) < n {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("stream ended after %d of %d events", len(out), n)
			}
			out = append(out, ev)
		case <-deadline:
			t.Fatalf("got %d of %d events within 20s: %v", len(out), n, out)
		}
	}
	return out
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ids(evs []sseEvent) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.name + ":" + ev.id
	}
	return out
}

func TestFeed_TwoPodsSeeTheSameEvents(t *testing.T) {
	c := newCluster(t)
	a, b := c.pod(t), c.pod(t)
	chA, _ := a.stream(t, "")
	chB, _ := b.stream(t, "")

	var want []string
	for i := 1; i <= 20; i++ {
		want = append(want, "sync:"+c.edge(i))
		c.memory(i) // not a sync-status event: neither stream carries it
		if i%5 == 0 {
			c.progress(i)
			want = append(want, "progress:")
		}
	}
	gotA, gotB := take(t, chA, len(want)), take(t, chB, len(want))
	if fmt.Sprint(ids(gotA)) != fmt.Sprint(want) {
		t.Fatalf("pod A carried %v\nwant %v", ids(gotA), want)
	}
	if fmt.Sprint(ids(gotB)) != fmt.Sprint(want) {
		t.Fatalf("pod B carried %v\nwant %v", ids(gotB), want)
	}
	for i := range gotA {
		if gotA[i].data != gotB[i].data {
			t.Fatalf("event %d differs: %s vs %s", i, gotA[i].data, gotB[i].data)
		}
	}
	if !strings.Contains(gotA[len(gotA)-1].data, `"bytes_done":20`) {
		t.Fatalf("last progress event %+v", gotA[len(gotA)-1])
	}
}

func TestFeed_ResumeOnTheOtherPod(t *testing.T) {
	c := newCluster(t)
	a, b := c.pod(t), c.pod(t)
	chA, stopA := a.stream(t, "")
	for i := 1; i <= 10; i++ {
		c.edge(i)
	}
	first := take(t, chA, 10)
	lastID := first[len(first)-1].id
	stopA() // the client loses pod A ...

	var missed []string
	for i := 11; i <= 20; i++ {
		missed = append(missed, "sync:"+c.edge(i))
	}
	c.progress(50)
	missed = append(missed, "progress:")

	// ... and the Service sends it to pod B, which (like every pod, a few
	// milliseconds after the stream stored them) has the missed events.
	deadline := time.Now().Add(10 * time.Second)
	for !b.api.Events().Has("edgesync/20/0") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	chB, _ := b.stream(t, lastID)
	got := take(t, chB, len(missed))
	if fmt.Sprint(ids(got)) != fmt.Sprint(missed) {
		t.Fatalf("resumed on pod B after %s: %v\nwant exactly %v", lastID, ids(got), missed)
	}
	live := c.edge(21)
	if ev := take(t, chB, 1)[0]; ev.id != live {
		t.Fatalf("after the missed events: %+v, want live %s", ev, live)
	}

	// A pod started after all of it (a rolling deploy) resumes too: the feed
	// reads the stream's recent past into its ring at start, without sending
	// that past to a client already connected.
	late := c.idlePod(t)
	early, _ := late.stream(t, "")
	late.start(t)
	chL, _ := late.stream(t, lastID)
	got = take(t, chL, len(missed)+1)
	if want := fmt.Sprint(append(missed, "sync:"+live)); fmt.Sprint(ids(got)) != want {
		t.Fatalf("resumed on a new pod: %v\nwant %v", ids(got), want)
	}
	next := c.edge(22)
	if ev := take(t, early, 1)[0]; ev.id != next {
		t.Fatalf("a client connected before the feed started got %+v first, want the live %s", ev, next)
	}
}

func TestFeed_NATSRestartMidStream(t *testing.T) {
	c := newCluster(t)
	p := c.pod(t)
	ch, _ := p.stream(t, "")
	var want []string
	for i := 1; i <= 10; i++ {
		want = append(want, "sync:"+c.edge(i))
	}
	got := take(t, ch, 10)
	created := c.streamCreated()
	if err := c.srv.Restart(); err != nil {
		t.Fatal(err)
	}
	for i := 11; i <= 20; i++ {
		want = append(want, "sync:"+c.edge(i))
	}
	// A replayed publish after the restart: JetStream drops it.
	c.edge(15)
	sentinel := c.edge(21)
	want = append(want, "sync:"+sentinel)
	got = append(got, take(t, ch, 11)...)
	// The feed tells a recreated stream by its creation time: a restart
	// must keep it, or the feed would re-read the stream from its start.
	if after := c.streamCreated(); !after.Equal(created) {
		t.Fatalf("the stream's creation time changed across a restart: %s -> %s", created, after)
	}
	if fmt.Sprint(ids(got)) != fmt.Sprint(want) {
		t.Fatalf("across a NATS restart the stream carried %v\nwant exactly %v", ids(got), want)
	}
	// The hub's ring holds each event once: a resume from the first id
	// replays exactly the rest.
	resumed, _ := p.stream(t, want[0][len("sync:"):])
	if r := take(t, resumed, len(want)-1); fmt.Sprint(ids(r)) != fmt.Sprint(want[1:]) {
		t.Fatalf("ring after the restart: %v\nwant %v", ids(r), want[1:])
	}
}

func TestFeed_WaitsForTheStream(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.New(api.Config{}, api.Deps{})
	feed := ssefeed.New(ssefeed.Config{Stream: streamName, Subjects: subjects, RetryMax: 50 * time.Millisecond}, js, srv.Events(), nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- feed.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	if feed.CaughtUp() {
		t.Fatal("caught up with a stream that does not exist")
	}
	// The leader creates the stream later; the standby's feed finds it.
	c := &cluster{t: t, srv: s, nc: nc, js: js}
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	if _, err := js.CreateStream(cctx, jetstream.StreamConfig{Name: streamName, Subjects: subjects.Stream(), Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the feed found the stream", feed.CaughtUp)
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Events().Close()
	p := &pod{api: srv, http: hs, feed: feed}
	ch, _ := p.stream(t, "")
	id := c.edge(1)
	if ev := take(t, ch, 1)[0]; ev.id != id {
		t.Fatalf("got %+v, want %s", ev, id)
	}
}

func TestFeed_StreamRecreated(t *testing.T) {
	c := newCluster(t)
	p := c.pod(t)
	ch, _ := p.stream(t, "")
	for i := 1; i <= 5; i++ {
		c.edge(i)
	}
	take(t, ch, 5)
	// An operator deletes the stream and the leader creates it again: its
	// sequences restart at 1, below where the feed was.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.js.DeleteStream(ctx, streamName); err != nil {
		t.Fatal(err)
	}
	// The server removes the old stream's store in the background; a create
	// right behind the delete can meet it ("error creating store for
	// stream"), so the operator's create is retried until the deadline.
	for {
		_, err := c.js.CreateStream(ctx, jetstream.StreamConfig{Name: streamName, Subjects: subjects.Stream(), Storage: jetstream.FileStorage})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var want []string
	for i := 100; i < 110; i++ {
		want = append(want, "sync:"+c.edge(i))
	}
	if got := take(t, ch, len(want)); fmt.Sprint(ids(got)) != fmt.Sprint(want) {
		t.Fatalf("after the stream was recreated: %v\nwant %v", ids(got), want)
	}
}
