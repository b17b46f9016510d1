package scaleout

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/daemon/daemontest"
	"github.com/edgesync/edgesync/internal/natstest"
	"github.com/edgesync/edgesync/internal/pgtest"
	"github.com/edgesync/edgesync/internal/testwait"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// pipelineConfig is one of the two pipelines: its slot, publication and
// leader lock (derived from the slot) are its own, its tables disjoint from
// the other's; the stream and subject prefix are shared.
func pipelineConfig(t testing.TB, dbURL, natsURL, name string, tables []string) config.Config {
	t.Helper()
	c := config.Default()
	c.DatabaseURL = dbURL
	c.NATSURL = natsURL
	c.HTTPAddr = "127.0.0.1:0"
	c.DataDir = t.TempDir()
	c.Slot = name
	c.Publication = name
	c.Tables = domainTables(tables)
	c.HeartbeatInterval = time.Second
	c.ReconcileInterval = 0
	c.AdminToken = "test-token"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// startInProcess runs a daemon until the test ends.
func startInProcess(t *testing.T, cfg config.Config) {
	t.Helper()
	daemontest.Start(t, cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).With(zap.String("pipeline", cfg.Slot)))
}

// TestScaleOut_TwoPipelinesPublishEveryEventOnce runs two pipelines over
// disjoint table sets against one database and one stream, changes rows of
// every table, and checks the stream: every expected memory and edge event
// exactly once (by Nats-Msg-Id and by change), nothing else, each from the
// pipeline that maps the memory type.
func TestScaleOut_TwoPipelinesPublishEveryEventOnce(t *testing.T) {
	ctx := context.Background()
	dbURL := pgtest.New(t)
	pool := pgtest.Pool(t, dbURL)
	ns := natstest.Start(t)
	js := connect(t, ns.URL())

	owner := map[string]string{} // memory type -> slot
	for name, tables := range map[string][]string{"edgesync_media": media, "edgesync_docs": docs} {
		cfg := pipelineConfig(t, dbURL, ns.URL(), name, tables)
		for _, tb := range cfg.Tables {
			owner[tb.MemoryType] = name
		}
		startInProcess(t, cfg)
	}
	// Both pipelines stream before anything is written: their snapshots are
	// done, so every later change reaches them through their slots. (A slot
	// shows as active already while it is being created; a row committed
	// before its consistent point is the snapshot's, which gives it edges
	// but, with snapshot events off, no memory event.)
	testwait.Eventually(t, 60*time.Second, "both pipelines streaming", func() (bool, string) {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM edgesync_pipeline_state p JOIN pg_replication_slots s ON s.slot_name = p.slot
			WHERE p.slot IN ('edgesync_media', 'edgesync_docs') AND p.snapshot_state = 'done' AND s.active`).Scan(&n); err != nil {
			return false, err.Error()
		}
		return n == 2, "streaming: " + strconv.Itoa(n)
	})

	ts := workload(0.004) // 60 inserts per media table, 40 notes, 20 updates and up to 20 deletes each: 400 changes
	if err := loadInserts(ctx, pool, ts, 10); err != nil {
		t.Fatal(err)
	}
	// The updates and deletes come once the inserts' edges exist, so that
	// no edge batch collapses an insert with a later change of its memory.
	wantEdges := 0
	for _, tb := range ts {
		wantEdges += tb.ins
		if tb.media {
			wantEdges += tb.ins
		}
	}
	testwait.Eventually(t, 60*time.Second, "the inserts' edges", func() (bool, string) {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM storage_edges`).Scan(&n); err != nil {
			return false, err.Error()
		}
		return n == wantEdges, strconv.Itoa(n) + " of " + strconv.Itoa(wantEdges)
	})
	if err := loadChanges(ctx, pool, ts, 10); err != nil {
		t.Fatal(err)
	}
	want, err := expectedChanges(ctx, pool, ts)
	if err != nil {
		t.Fatal(err)
	}

	// Done when both slots are confirmed past everything written so far,
	// the pipelines' own edge writes included: then every event is in the
	// stream, and any duplicate would be too.
	var walEnd string
	var counted uint64
	deadline := time.Now().Add(2 * time.Minute)
	for counted < uint64(len(want)) && time.Now().Before(deadline) {
		counted = countStream(t, js)
		time.Sleep(20 * time.Millisecond)
	}
	if counted < uint64(len(want)) {
		// Say which: the comparison below lists what is missing.
		t.Errorf("only %d of %d expected events in the stream after 2 minutes", counted, len(want))
	}
	if err := pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&walEnd); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, 60*time.Second, "both slots confirmed past "+walEnd, func() (bool, string) {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ('edgesync_media', 'edgesync_docs')
			AND confirmed_flush_lsn >= $1::pg_lsn`, walEnd).Scan(&n); err != nil {
			return false, err.Error()
		}
		return n == 2, strconv.Itoa(n) + " of 2"
	})

	seen := map[change]int{}
	ids := map[string]int{}
	for _, m := range readStream(t, js) {
		if !strings.Contains(m.subject, ".memory.") && !strings.Contains(m.subject, ".edge.") {
			continue // gallery and other subjects are not this test's
		}
		var ev struct {
			ID         string  `json:"id"`
			MemoryID   *string `json:"memory_id"`
			MemoryType string  `json:"memory_type"`
			Artifact   string  `json:"artifact"`
		}
		if err := json.Unmarshal(m.data, &ev); err != nil {
			t.Fatalf("message on %s is not an envelope: %v", m.subject, err)
		}
		if m.msgID == "" || ev.ID != m.msgID {
			t.Errorf("message on %s: Nats-Msg-Id %q, envelope id %q", m.subject, m.msgID, ev.ID)
		}
		ids[m.msgID]++
		if ev.MemoryID == nil {
			t.Errorf("message %s on %s has no memory_id", m.msgID, m.subject)
			continue
		}
		c := change{m.subject, *ev.MemoryID, ev.Artifact}
		seen[c]++
		// The msg id starts with the slot of the pipeline that published it.
		if slot, _, _ := strings.Cut(m.msgID, "/"); slot != owner[ev.MemoryType] {
			t.Errorf("%s (%s) published by pipeline %s, but %s maps %s", c, m.msgID, slot, owner[ev.MemoryType], ev.MemoryType)
		}
		if typ, ok := want[c]; ok && typ != ev.MemoryType {
			t.Errorf("%s has memory_type %s, want %s", c, ev.MemoryType, typ)
		}
	}
	for id, n := range ids {
		if n != 1 {
			t.Errorf("Nats-Msg-Id %s %d times in the stream", id, n)
		}
	}
	missing, extra, twice := 0, 0, 0
	for c := range want {
		if seen[c] == 0 {
			missing++
			if missing <= 10 {
				t.Errorf("missing: %s", c)
			}
		}
	}
	for c, n := range seen {
		if _, ok := want[c]; !ok {
			extra++
			if extra <= 10 {
				t.Errorf("unexpected: %s (%d times)", c, n)
			}
		} else if n > 1 {
			twice++
			if twice <= 10 {
				t.Errorf("%d times: %s", n, c)
			}
		}
	}
	if missing+extra+twice > 0 {
		t.Fatalf("%d expected events: %d missing, %d unexpected, %d more than once", len(want), missing, extra, twice)
	}
	if len(ids) != len(want) {
		t.Fatalf("%d distinct msg ids for %d expected events", len(ids), len(want))
	}
}

// countStream is the number of memory and edge messages in the stream.
func countStream(t testing.TB, js jetstream.JetStream) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "EDGESYNC")
	if err != nil {
		return 0 // not created yet
	}
	var n uint64
	for _, f := range []string{"edgesync.memory.>", "edgesync.edge.>"} {
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(f))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range info.State.Subjects {
			n += c
		}
	}
	return n
}

type msg struct {
	subject, msgID string
	data           []byte
}

// readStream reads every message of the stream once.
func readStream(t testing.TB, js jetstream.JetStream) []msg {
	t.Helper()
	var out []msg
	for _, m := range natstest.ReadStream(t, js, "EDGESYNC") {
		out = append(out, msg{m.Subject(), m.Headers().Get(jetstream.MsgIDHeader), m.Data()})
	}
	return out
}

func connect(t testing.TB, natsURL string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
