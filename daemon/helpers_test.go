package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/internal/natstest"
	"github.com/edgesync/edgesync/internal/pgtest"
	"github.com/edgesync/edgesync/internal/testwait"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testConfig is a valid config for dbURL and natsURL.
func testConfig(t testing.TB, dbURL, natsURL string) config.Config {
	t.Helper()
	c := config.Default()
	c.DatabaseURL = dbURL
	c.NATSURL = natsURL
	c.HTTPAddr = "127.0.0.1:0"
	c.DataDir = t.TempDir()
	c.HeartbeatInterval = time.Second
	c.ReconcileInterval = 0
	c.AdminToken = "test-token"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// runningDaemon is a daemon started in-process.
type runningDaemon struct {
	d      *Daemon
	cancel context.CancelFunc
	done   chan error
}

func startDaemon(t testing.TB, cfg config.Config) *runningDaemon {
	t.Helper()
	return startDaemonLog(t, cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
}

// startDaemonLog is startDaemon with the daemon's logger (to observe it).
func startDaemonLog(t testing.TB, cfg config.Config, log *zap.Logger) *runningDaemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d, err := New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	rd := &runningDaemon{d: d, cancel: cancel, done: make(chan error, 1)}
	go func() { rd.done <- d.Run(ctx) }()
	t.Cleanup(func() { rd.stop(t) })
	return rd
}

func (rd *runningDaemon) stop(t testing.TB) {
	t.Helper()
	if rd.cancel == nil {
		return
	}
	rd.cancel()
	rd.cancel = nil
	select {
	case err := <-rd.done:
		if err != nil {
			t.Errorf("daemon exited with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Error("daemon did not stop within 15s")
	}
}

// eventually polls cond until it holds or the deadline passes.
var eventually = testwait.Eventually

// streamMessages reads every message of the stream (subject, parsed event).
type streamMsg struct {
	Subject string
	MsgID   string
	Header  nats.Header
	Event   cdc.Event
	Raw     []byte
}

func readStream(t testing.TB, natsURL, stream string) []streamMsg {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var out []streamMsg
	for _, m := range natstest.ReadStream(t, js, stream) {
		sm := streamMsg{Subject: m.Subject(), MsgID: m.Headers().Get(jetstream.MsgIDHeader), Header: m.Headers(), Raw: m.Data()}
		if strings.Contains(sm.Subject, ".memory.") || strings.Contains(sm.Subject, ".edge.") {
			if err := json.Unmarshal(sm.Raw, &sm.Event); err != nil {
				t.Fatalf("message %d on %s is not an envelope: %v: %s", len(out)+1, sm.Subject, err, sm.Raw)
			}
		}
		out = append(out, sm)
	}
	return out
}

// edgeRow is one storage_edges row as the tests compare them.
type edgeRow struct {
	MemoryID, MemoryType, Artifact, Backend string
	Present                                 bool
	Location                                string
	Size                                    int64
}

func (e edgeRow) String() string {
	return fmt.Sprintf("%s/%s/%s/%s present=%v loc=%q size=%d", e.MemoryID, e.MemoryType, e.Artifact, e.Backend, e.Present, e.Location, e.Size)
}

func edgesOf(t testing.TB, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT memory_id::text, memory_type::text, artifact::text, backend::text, present,
		coalesce(location, ''), coalesce(size_bytes, -1) FROM storage_edges WHERE backend <> 'icp-canister'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var e edgeRow
		if err := rows.Scan(&e.MemoryID, &e.MemoryType, &e.Artifact, &e.Backend, &e.Present, &e.Location, &e.Size); err != nil {
			t.Fatal(err)
		}
		out = append(out, e.String())
	}
	sort.Strings(out)
	return out
}

// expectedEdges computes the edges CONTRACT section 4 requires from the
// memory rows themselves.
func expectedEdges(t testing.TB, pool *pgxpool.Pool) []string {
	t.Helper()
	var out []string
	for _, tb := range domain.DefaultTables() {
		q := fmt.Sprintf("SELECT id::text, %s, %s FROM %s", orNull(tb.URLColumn, "text"), orNull(tb.SizeColumn, "bigint"), tb.Name)
		rows, err := pool.Query(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id string
			var url *string
			var size *int64
			if err := rows.Scan(&id, &url, &size); err != nil {
				t.Fatal(err)
			}
			out = append(out, edgeRow{MemoryID: id, MemoryType: tb.MemoryType, Artifact: "metadata", Backend: "neon-db", Present: true, Size: -1}.String())
			if url != nil {
				s := int64(-1)
				if size != nil {
					s = *size
				}
				out = append(out, edgeRow{MemoryID: id, MemoryType: tb.MemoryType, Artifact: "asset", Backend: "vercel-blob", Present: true, Location: *url, Size: s}.String())
			}
		}
		rows.Close()
	}
	sort.Strings(out)
	return out
}

// diffEdges says what differs, briefly.
func diffEdges(got, want []string) string {
	g := map[string]bool{}
	for _, s := range got {
		g[s] = true
	}
	w := map[string]bool{}
	for _, s := range want {
		w[s] = true
	}
	var b strings.Builder
	n := 0
	for _, s := range want {
		if !g[s] && n < 5 {
			fmt.Fprintf(&b, "missing %s; ", s)
			n++
		}
	}
	for _, s := range got {
		if !w[s] && n < 10 {
			fmt.Fprintf(&b, "extra %s; ", s)
			n++
		}
	}
	return b.String()
}

func orNull(col, typ string) string {
	if col == "" {
		return "NULL::" + typ
	}
	return col
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
