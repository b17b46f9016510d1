package api

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgesync/edgesync/internal/ssetest"
)

type sseEvent struct{ name, id, data string }

// sseClient reads a stream with a real HTTP client and hands events over a
// channel; comments are reported with name ":".
func sseClient(t *testing.T, url, lastID string) (<-chan sseEvent, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream answered %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ch := make(chan sseEvent, 1024)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		ssetest.Scan(resp.Body, true, func(e ssetest.Event) { ch <- sseEvent{name: e.Name, id: e.ID, data: e.Data} })
	}()
	return ch, cancel
}

// next returns the next non-comment event.
func next(t *testing.T, ch <-chan sseEvent) sseEvent {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatal("stream ended")
			}
			if ev.name != ":" {
				return ev
			}
		case <-timeout:
			t.Fatal("no event within 5s")
		}
	}
}

func edgeEnvelope(i int, backend, state string) []byte {
	return []byte(fmt.Sprintf(`{"id":"edgesync/0/%d","op":"updated","memory_id":"m%d","memory_type":"image","backend":%q,"artifact":"asset","before":null,"after":{"backend":%q,"sync_state":%q,"present":false}}`, i, i, backend, backend, state))
}

func TestSyncStream_LiveResumeAndFilters(t *testing.T) {
	e := newEnv(t, func(c *Config, d *Deps) { c.SSEReplay = 100 })
	hub := e.srv.Events()
	url := e.http.URL + "/api/storage/sync-status/stream"
	all, cancelAll := sseClient(t, url, "")
	defer cancelAll()
	failedOnly, cancelFailed := sseClient(t, url+"?state=failed", "")
	defer cancelFailed()
	eventually(t, 5*time.Second, "two clients", func() bool { return hub.Clients() == 2 })

	for i := 1; i <= 10; i++ {
		state := "migrating"
		if i%5 == 0 {
			state = "failed"
		}
		hub.Publish(fmt.Sprintf("edgesync/0/%d", i), edgeEnvelope(i, "icp-canister", state))
	}
	hub.PublishEvent("progress", "", []byte(`{"memory_id":"m1","bytes_done":5,"bytes_total":10}`))
	for i := 1; i <= 10; i++ {
		ev := next(t, all)
		if ev.name != "sync" || ev.id != fmt.Sprintf("edgesync/0/%d", i) || !strings.Contains(ev.data, `"op":"updated"`) {
			t.Fatalf("event %d: %+v", i, ev)
		}
	}
	if ev := next(t, all); ev.name != "progress" || ev.id != "" {
		t.Fatalf("progress event %+v", ev)
	}
	for _, want := range []string{"edgesync/0/5", "edgesync/0/10"} {
		if ev := next(t, failedOnly); ev.id != want {
			t.Fatalf("filtered stream got %+v, want id %s", ev, want)
		}
	}

	// Resume after id 7: events 8..10 and the progress event, then live.
	resumed, cancelResumed := sseClient(t, url, "edgesync/0/7")
	defer cancelResumed()
	for _, want := range []string{"edgesync/0/8", "edgesync/0/9", "edgesync/0/10", ""} {
		if ev := next(t, resumed); ev.id != want {
			t.Fatalf("resumed got %+v, want id %q", ev, want)
		}
	}
	hub.Publish("edgesync/0/11", edgeEnvelope(11, "icp-canister", "idle"))
	if ev := next(t, resumed); ev.id != "edgesync/0/11" {
		t.Fatalf("resumed live %+v", ev)
	}

	// An id no longer (or never) in the ring: reset, then live.
	lost, cancelLost := sseClient(t, url, "edgesync/0/unknown")
	defer cancelLost()
	if ev := next(t, lost); ev.name != "reset" {
		t.Fatalf("want reset, got %+v", ev)
	}
	hub.Publish("edgesync/0/12", edgeEnvelope(12, "neon-db", "idle"))
	if ev := next(t, lost); ev.id != "edgesync/0/12" {
		t.Fatalf("after reset %+v", ev)
	}
}

func TestSyncStream_KeepAliveOutlivesServerTimeouts(t *testing.T) {
	e := newEnv(t, func(c *Config, d *Deps) { c.SSEKeepAlive = 20 * time.Millisecond })
	srv := e.srv.HTTPServer("127.0.0.1:0")
	// Far shorter than the stream lives: the stream must lift them.
	srv.WriteTimeout, srv.ReadTimeout = 100*time.Millisecond, 100*time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	ch, cancel := sseClient(t, "http://"+ln.Addr().String()+"/api/storage/sync-status/stream", "")
	defer cancel()
	start := time.Now()
	keepAlives := 0
	for time.Since(start) < 400*time.Millisecond {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("stream cut after %s", time.Since(start))
			}
			if ev.name == ":" && ev.data == "keep-alive" {
				keepAlives++
			}
		case <-time.After(time.Second):
			t.Fatal("stream went silent")
		}
	}
	if keepAlives < 3 {
		t.Fatalf("%d keep-alives in 400ms", keepAlives)
	}
	e.srv.Events().Publish("x/1", edgeEnvelope(1, "neon-db", "idle"))
	if ev := next(t, ch); ev.id != "x/1" {
		t.Fatalf("after the timeouts: %+v", ev)
	}
	// Shutdown ends the stream instead of waiting for it.
	ctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with an open stream: %v", err)
	}
}

func TestSyncStream_SlowClientDoesNotBlockPublish(t *testing.T) {
	e := newEnv(t, func(c *Config, d *Deps) {
		c.SSEClientBuffer = 32
		c.SSEWriteTimeout = 300 * time.Millisecond
	})
	hub := e.srv.Events()
	// A client that sends its request and never reads a byte.
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.http.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "GET /api/storage/sync-status/stream HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// And a healthy one alongside.
	healthy, cancel := sseClient(t, e.http.URL+"/api/storage/sync-status/stream", "")
	defer cancel()
	eventually(t, 5*time.Second, "two clients", func() bool { return hub.Clients() == 2 })

	big := strings.Repeat("x", 4096)
	const n = 5000
	start := time.Now()
	for i := 0; i < n; i++ {
		hub.Publish(fmt.Sprintf("e/%d", i), []byte(`{"backend":"neon-db","pad":"`+big+`"}`))
	}
	// A Publish that waited for the stuck client would take SSEWriteTimeout
	// per event (25 minutes here). The bound is a quarter of that, not a
	// speed: what is checked is that Publish does not wait for the client,
	// however loaded the machine is.
	blocking := n * 300 * time.Millisecond
	if d := time.Since(start); d > blocking/4 {
		t.Fatalf("publishing %d events took %s: Publish waits for the stuck client", n, d)
	}
	eventually(t, 10*time.Second, "the slow client dropped", func() bool { return hub.Clients() <= 1 })
	// Publish still returns at once with no reader at all.
	start = time.Now()
	for i := 0; i < n; i++ {
		hub.Publish(fmt.Sprintf("f/%d", i), []byte(`{}`))
	}
	if d := time.Since(start); d > blocking/4 {
		t.Fatalf("publish after drop took %s", d)
	}
	_ = healthy // it may itself have been dropped under this flood; not what this test checks
}

func TestSyncStream_ClientCap(t *testing.T) {
	e := newEnv(t, func(c *Config, d *Deps) { c.MaxSSEClients = 2 })
	hub := e.srv.Events()
	url := e.http.URL + "/api/storage/sync-status/stream"
	first, cancelFirst := sseClient(t, url, "")
	_, cancelSecond := sseClient(t, url, "")
	defer cancelSecond()
	eventually(t, 5*time.Second, "two clients", func() bool { return hub.Clients() == 2 })

	code, body, h := e.do("GET", "/api/storage/sync-status/stream", "", nil)
	if code != http.StatusServiceUnavailable || errCode(body) != "too_many_clients" || h.Get("Retry-After") != "5" {
		t.Fatalf("third client: %d %v Retry-After=%q, want 503 too_many_clients with Retry-After 5", code, body, h.Get("Retry-After"))
	}
	if hub.Clients() != 2 {
		t.Fatalf("%d clients after a refusal, want 2", hub.Clients())
	}
	// The refused request did not take a slot: once one leaves, a new one fits.
	cancelFirst()
	for range first {
	}
	eventually(t, 5*time.Second, "one client left", func() bool { return hub.Clients() == 1 })
	third, cancelThird := sseClient(t, url, "")
	defer cancelThird()
	hub.Publish("cap/1", edgeEnvelope(1, "neon-db", "idle"))
	if ev := next(t, third); ev.id != "cap/1" {
		t.Fatalf("client admitted after the cap freed: %+v", ev)
	}
}

func TestHub_SameIDOnce(t *testing.T) {
	e := newEnv(t, nil)
	hub := e.srv.Events()
	ch, cancel := sseClient(t, e.http.URL+"/api/storage/sync-status/stream", "")
	defer cancel()
	eventually(t, 5*time.Second, "a client", func() bool { return hub.Clients() == 1 })
	hub.Backfill("sync", "dup/0", edgeEnvelope(0, "neon-db", "idle")) // the past: not sent
	hub.Publish("dup/0", edgeEnvelope(0, "neon-db", "idle"))          // a redelivery of it
	hub.Publish("dup/1", edgeEnvelope(1, "neon-db", "idle"))
	hub.Publish("dup/1", edgeEnvelope(1, "neon-db", "idle")) // a redelivery
	hub.Publish("dup/2", edgeEnvelope(2, "neon-db", "idle"))
	for _, want := range []string{"dup/1", "dup/2"} {
		if ev := next(t, ch); ev.id != want {
			t.Fatalf("got %+v, want %s (each id once, the backfilled past never)", ev, want)
		}
	}
}
