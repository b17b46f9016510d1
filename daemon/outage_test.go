package daemon

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/internal/pgtest"
)

// TestCrash_RestartAfterTheDuplicateWindow: events stored but not yet
// confirmed when the daemon dies must not be stored again when it comes back
// after the stream's duplicate window has passed (JetStream no longer drops
// them): the daemon learns what the stream holds of the replay and skips it.
func TestCrash_RestartAfterTheDuplicateWindow(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, pgtest.New(t))
	pool := e.pool
	p := e.start(t)
	waitSlot(t, pool, "edgesync")

	// Hold storage_edges: edge batches cannot commit, so no transaction
	// becomes durable and the slot is not confirmed past the writes, while
	// their memory events are published and stored.
	blocker, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback(ctx) //nolint:errcheck
	if _, err := blocker.Exec(ctx, `LOCK TABLE storage_edges IN EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	w, stopWrites := startWrites(pool, 7)
	eventually(t, 30*time.Second, "memory events stored while edges are blocked", func() (bool, string) {
		n := 0
		for _, m := range readStream(t, e.ns.URL(), "EDGESYNC") {
			if strings.Contains(m.Subject, ".memory.") {
				n++
			}
		}
		return n >= 30, "stored " + strconv.Itoa(n)
	})
	stopWrites()
	p.kill()
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	// The outage outlasts the duplicate window: shrink it to 1 s and wait
	// until the server really forgets an id it saw (a probe proves it).
	nc, err := nats.Connect(e.ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// probe publishes one message with a fixed id: true when the server
	// stored it (it no longer knows the id), false when it dropped it as a
	// duplicate or could not answer yet (a restarted server on a loaded
	// machine).
	probe := func() (bool, string) {
		m := &nats.Msg{Subject: "edgesync.sync.probe", Data: []byte(`{}`), Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, "outage-probe")
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			return false, err.Error()
		}
		return !ack.Duplicate, "probe still a duplicate"
	}
	eventually(t, 30*time.Second, "the probe stored", probe)
	setWindow := func(d time.Duration) {
		st, err := js.Stream(ctx, "EDGESYNC")
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		cfg.Duplicates = d
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	setWindow(time.Second)
	// The server rebuilds its duplicate table from the stream on start,
	// keeping only ids inside the (now 1 s) window.
	time.Sleep(1100 * time.Millisecond) // let the window pass: wall time is the point here
	if err := e.ns.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the stream forgetting ids older than its window", probe)
	setWindow(2 * time.Minute) // what the daemon requires; the old ids are gone

	e.start(t)
	converge(t, pool, "edgesync")
	checkStream(t, pool, e.ns.URL(), "EDGESYNC")
	if log := readLog(t, e.logf); !strings.Contains(log, "not published again") {
		t.Fatalf("the restart did not find the stored replay (the test did not exercise the skip)")
	}
	if w.commits.Load() < 5 {
		t.Fatalf("only %d transactions written", w.commits.Load())
	}
}
