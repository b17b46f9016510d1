package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap/zapcore"

	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/internal/natstest"
	"github.com/edgesync/edgesync/internal/pgtest"
)

// The test binary doubles as the daemon process for the crash tests: with
// EDGESYNC_TEST_SUBPROCESS=daemon it runs `edgesync run` from the environment
// instead of the tests.
func init() {
	if os.Getenv("EDGESYNC_TEST_SUBPROCESS") != "daemon" {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cfg, err := config.Load("", os.LookupEnv)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	log, _ := NewLogger(cfg, zapcore.Lock(os.Stderr))
	d, err := New(ctx, cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := d.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// proc is the daemon as a subprocess.
type proc struct {
	cmd  *exec.Cmd
	addr string
	done chan error
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startProc(t testing.TB, dbURL, natsURL string, logf *os.File, extra ...string) *proc {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		"EDGESYNC_TEST_SUBPROCESS=daemon",
		"EDGESYNC_DATABASE_URL="+dbURL,
		"EDGESYNC_NATS_URL="+natsURL,
		"EDGESYNC_HTTP_ADDR="+addr,
		"EDGESYNC_DATA_DIR="+t.TempDir(),
		"EDGESYNC_RECONCILE_INTERVAL=0",
		"EDGESYNC_HEARTBEAT_INTERVAL=1s",
		"EDGESYNC_LOG_LEVEL=info",
		"EDGESYNC_ADMIN_TOKEN=t",
	)
	cmd.Env = append(cmd.Env, extra...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, addr: addr, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.done <- nil // later kills return at once
}

// term sends SIGTERM and returns how long the exit took and its error.
func (p *proc) term(within time.Duration) (time.Duration, error) {
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		return time.Since(start), err
	case <-time.After(within):
		return time.Since(start), fmt.Errorf("no exit within %s", within)
	}
}

// metrics returns the process' /metrics text ("" when unreachable).
func (p *proc) metrics() string {
	resp, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// leader reads edgesync_leader from the process' metrics.
func (p *proc) leader() bool { return strings.Contains(p.metrics(), "\nedgesync_leader 1") }

// readLog returns what the daemons wrote so far.
func readLog(t *testing.T, f *os.File) string {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// workload writes memory changes and logs each, in the same transaction, to
// change_log (not published), so the expected events are known exactly even
// when Postgres restarts under it.
type workload struct {
	pool    *pgxpool.Pool
	seq     atomic.Int64
	ids     []string // live image ids
	mu      sync.Mutex
	commits atomic.Int64
}

const changeLogDDL = `CREATE TABLE IF NOT EXISTS change_log (seq bigint PRIMARY KEY, memory_id uuid NOT NULL, op text NOT NULL, token text)`

func (w *workload) step(ctx context.Context, r *rand.Rand) error {
	tok := func() string { return fmt.Sprintf("t%d", w.seq.Add(1)) }
	return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		logc := func(id, op, token string) error {
			_, err := tx.Exec(ctx, `INSERT INTO change_log (seq, memory_id, op, token) VALUES ($1, $2, $3, $4)`, w.seq.Add(1), id, op, token)
			return err
		}
		w.mu.Lock()
		n := len(w.ids)
		w.mu.Unlock()
		switch k := r.IntN(10); {
		case k < 5 || n < 10: // insert a few images and a note
			for i := 0; i < 3; i++ {
				t := tok()
				var id string
				if err := tx.QueryRow(ctx, `INSERT INTO images (owner_id, title, url, size_bytes) VALUES (gen_random_uuid(), $1, $2, $3) RETURNING id::text`,
					t, "https://blob/"+t+".jpg", r.IntN(1<<20)).Scan(&id); err != nil {
					return err
				}
				if err := logc(id, "created", t); err != nil {
					return err
				}
				defer func() { w.mu.Lock(); w.ids = append(w.ids, id); w.mu.Unlock() }()
			}
			t := tok()
			var id string
			if err := tx.QueryRow(ctx, `INSERT INTO notes (owner_id, title, body) VALUES (gen_random_uuid(), $1, 'b') RETURNING id::text`, t).Scan(&id); err != nil {
				return err
			}
			return logc(id, "created", t)
		case k < 8: // update the URL (sometimes to null)
			w.mu.Lock()
			id := w.ids[r.IntN(n)]
			w.mu.Unlock()
			t := tok()
			var url *string
			if k < 7 {
				s := "https://blob/" + t + ".jpg"
				url = &s
			}
			tag, err := tx.Exec(ctx, `UPDATE images SET title = $2, url = $3 WHERE id = $1`, id, t, url)
			if err != nil || tag.RowsAffected() == 0 {
				return err
			}
			return logc(id, "updated", t)
		default: // delete
			w.mu.Lock()
			i := r.IntN(n)
			id := w.ids[i]
			w.ids = append(w.ids[:i], w.ids[i+1:]...)
			w.mu.Unlock()
			tag, err := tx.Exec(ctx, `DELETE FROM images WHERE id = $1`, id)
			if err != nil || tag.RowsAffected() == 0 {
				return err
			}
			return logc(id, "deleted", "")
		}
	})
}

// run writes until ctx ends, tolerating a Postgres that comes and goes.
func (w *workload) run(ctx context.Context, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 7))
	for ctx.Err() == nil {
		if err := w.step(ctx, r); err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		w.commits.Add(1)
	}
}

// env is what a subprocess test needs: a database with change_log, a NATS
// server and a log file shared by the daemons it starts.
type env struct {
	dbURL string
	pool  *pgxpool.Pool
	ns    *natstest.Server
	logf  *os.File
}

func newEnv(t *testing.T, dbURL string) *env {
	t.Helper()
	e := &env{dbURL: dbURL, pool: pgtest.Pool(t, dbURL), ns: natstest.Start(t), logf: logFile(t)}
	if _, err := e.pool.Exec(context.Background(), changeLogDDL); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) start(t *testing.T) *proc { return startProc(t, e.dbURL, e.ns.URL(), e.logf) }

// startWrites runs the workload until the returned stop is called.
func startWrites(pool *pgxpool.Pool, seed uint64) (*workload, func()) {
	w := &workload{pool: pool}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.run(ctx, seed) }()
	return w, func() { cancel(); <-done }
}

// checkStream verifies that every logged change has exactly one event in
// the stream and nothing else is there.
func checkStream(t *testing.T, pool *pgxpool.Pool, natsURL, stream string) {
	t.Helper()
	ctx := context.Background()
	rows, err := pool.Query(ctx, `SELECT memory_id::text, op, coalesce(token, '') FROM change_log`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{}
	n := 0
	for rows.Next() {
		var id, op, tok string
		if err := rows.Scan(&id, &op, &tok); err != nil {
			t.Fatal(err)
		}
		want[id+"|"+op+"|"+tok]++
		n++
	}
	rows.Close()
	var got map[string]int
	var last string
	deadline := time.Now().Add(60 * time.Second)
	for {
		got = map[string]int{}
		ids := map[string]int{}
		for _, m := range readStream(t, natsURL, stream) {
			if !strings.Contains(m.Subject, ".memory.") {
				continue
			}
			ids[m.MsgID]++
			tok := ""
			if m.Event.Op != "deleted" {
				var after struct {
					Title string `json:"title"`
				}
				_ = json.Unmarshal(m.Event.After, &after)
				tok = after.Title
			}
			got[*m.Event.MemoryID+"|"+m.Event.Op+"|"+tok]++
		}
		for id, c := range ids {
			if c > 1 {
				t.Fatalf("msg id %s is %d times in the stream", id, c)
			}
		}
		last = diffCounts(got, want)
		if last == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream differs from the %d logged changes: %s", n, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%d changes, each exactly once in the stream", n)
}

func diffCounts(got, want map[string]int) string {
	var out []string
	for k, c := range want {
		if got[k] != c {
			out = append(out, fmt.Sprintf("%s: want %d got %d", k, c, got[k]))
		}
	}
	for k, c := range got {
		if _, ok := want[k]; !ok {
			out = append(out, fmt.Sprintf("%s: unexpected x%d", k, c))
		}
	}
	sort.Strings(out)
	if len(out) > 5 {
		out = append(out[:5], fmt.Sprintf("... %d more", len(out)-5))
	}
	return strings.Join(out, "; ")
}

// converge waits for edges to equal the rule and the slot to be confirmed past
// everything written.
func converge(t *testing.T, pool *pgxpool.Pool, slot string) {
	t.Helper()
	ctx := context.Background()
	var target string
	if err := pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&target); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "edges converged", func() (bool, string) {
		d := diffEdges(edgesOf(t, pool), expectedEdgesWithTombstones(t, pool))
		return d == "", d
	})
	eventually(t, 60*time.Second, "slot confirmed past the writes", func() (bool, string) {
		var ok bool
		var c *string
		if err := pool.QueryRow(ctx, `SELECT confirmed_flush_lsn >= $2::pg_lsn, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, slot, target).Scan(&ok, &c); err != nil {
			return false, err.Error()
		}
		return ok, fmt.Sprintf("confirmed %v, target %s", deref(c), target)
	})
}

// expectedEdgesWithTombstones is expectedEdges plus the not-present blob
// edges of images whose URL was cleared.
func expectedEdgesWithTombstones(t testing.TB, pool *pgxpool.Pool) []string {
	t.Helper()
	want := expectedEdges(t, pool)
	rows, err := pool.Query(context.Background(), `SELECT id::text, coalesce(size_bytes, -1) FROM images WHERE url IS NULL
		AND EXISTS (SELECT 1 FROM change_log c WHERE c.memory_id = images.id AND c.op = 'updated')`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var size int64
		if err := rows.Scan(&id, &size); err != nil {
			t.Fatal(err)
		}
		want = append(want, edgeRow{MemoryID: id, MemoryType: "image", Artifact: "asset", Backend: "vercel-blob", Present: false, Size: size}.String())
	}
	sort.Strings(want)
	return want
}

// waitSlot waits until the pipeline streams: the slot exists and its snapshot
// is done.
func waitSlot(t *testing.T, pool *pgxpool.Pool, slot string) {
	t.Helper()
	eventually(t, 30*time.Second, "the slot streaming", func() (bool, string) {
		var n int
		err := pool.QueryRow(context.Background(), `SELECT count(*) FROM edgesync_pipeline_state WHERE slot = $1 AND snapshot_state = 'done'`, slot).Scan(&n)
		return err == nil && n == 1, fmt.Sprint(err)
	})
}

func logFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(f.Name())
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("daemon log (tail):\n%s", b)
		}
		f.Close()
	})
	return f
}

// TestCrash_DaemonKilled kills the daemon with SIGKILL at random moments under
// a stream of writes, several times, and restarts it.
func TestCrash_DaemonKilled(t *testing.T) {
	e := newEnv(t, pgtest.New(t))
	pool, ns := e.pool, e.ns
	// Every change goes through the stream: writes start once the slot exists.
	first := e.start(t)
	waitSlot(t, pool, "edgesync")
	w, stopWrites := startWrites(pool, 1)

	r := rand.New(rand.NewPCG(42, 1))
	for i := 0; i < 5; i++ {
		p := first
		if i > 0 {
			p = e.start(t)
		}
		time.Sleep(time.Duration(300+r.IntN(900)) * time.Millisecond) // a random moment, not a wait for an outcome
		p.kill()
	}
	stopWrites()
	p := e.start(t)
	converge(t, pool, "edgesync")
	checkStream(t, pool, ns.URL(), "EDGESYNC")
	if took, err := p.term(10 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v after %s", err, took)
	}
	if w.commits.Load() < 20 {
		t.Fatalf("only %d transactions written: the workload did not run", w.commits.Load())
	}
}

// TestCrash_NATSAndPostgresRestart restarts NATS and then Postgres (as a
// crash) under a stream of writes while the daemon runs.
func TestCrash_NATSAndPostgresRestart(t *testing.T) {
	cluster := pgtest.StartCluster(t)
	e := newEnv(t, cluster.NewDB(t))
	pool, ns := e.pool, e.ns
	p := e.start(t)
	waitSlot(t, pool, "edgesync")
	w, stopWrites := startWrites(pool, 2)

	waitCommits := func(n int64) {
		eventually(t, 30*time.Second, "writes", func() (bool, string) { return w.commits.Load() >= n, "" })
	}
	waitCommits(30)
	ns.Stop()
	waitCommits(w.commits.Load() + 30) // writes go on while NATS is down
	if err := ns.Start(); err != nil {
		t.Fatal(err)
	}
	waitCommits(w.commits.Load() + 30)
	if err := cluster.Restart(true); err != nil {
		t.Fatal(err)
	}
	waitCommits(w.commits.Load() + 30)
	stopWrites()
	converge(t, pool, "edgesync")
	checkStream(t, pool, ns.URL(), "EDGESYNC")
	if took, err := p.term(10 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v after %s", err, took)
	}
}

// TestLeader_Failover runs two instances; one leads; killing it hands the
// slot to the other with nothing lost.
func TestLeader_Failover(t *testing.T) {
	e := newEnv(t, pgtest.New(t))
	pool, ns := e.pool, e.ns
	a := e.start(t)
	eventually(t, 30*time.Second, "a leads", func() (bool, string) { return a.leader(), "" })
	waitSlot(t, pool, "edgesync")
	b := e.start(t)
	eventually(t, 30*time.Second, "b serves as standby", func() (bool, string) {
		resp, err := http.Get("http://" + b.addr + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200 && !b.leader(), resp.Status
	})
	w, stopWrites := startWrites(pool, 3)
	eventually(t, 30*time.Second, "writes", func() (bool, string) { return w.commits.Load() >= 30, "" })
	var oldPID int
	if err := pool.QueryRow(context.Background(), `SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'edgesync'`).Scan(&oldPID); err != nil {
		t.Fatal(err)
	}
	a.kill()
	killed := time.Now()
	eventually(t, 30*time.Second, "b takes over", func() (bool, string) { return b.leader(), "" })
	leads := time.Since(killed)
	eventually(t, 30*time.Second, "b streaming from the slot", func() (bool, string) {
		var pid *int32
		err := pool.QueryRow(context.Background(), `SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'edgesync'`).Scan(&pid)
		return err == nil && pid != nil && int(*pid) != oldPID, fmt.Sprint(err)
	})
	t.Logf("failover: the standby leads %s and streams %s after the leader was killed",
		leads.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	stopWrites()
	converge(t, pool, "edgesync")
	checkStream(t, pool, ns.URL(), "EDGESYNC")
}

// TestHA_RollingRestart replaces both instances one after the other with
// SIGTERM, as a Deployment's rolling update does, under a stream of writes:
// each drains and exits 0 within the grace period, the other takes over, and
// nothing is lost or duplicated.
func TestHA_RollingRestart(t *testing.T) {
	e := newEnv(t, pgtest.New(t))
	pool, ns := e.pool, e.ns
	a := e.start(t)
	eventually(t, 30*time.Second, "a leads", func() (bool, string) { return a.leader(), "" })
	waitSlot(t, pool, "edgesync")
	b := e.start(t)
	w, stopWrites := startWrites(pool, 4)
	waitCommits := func(n int64) {
		eventually(t, 30*time.Second, "writes", func() (bool, string) { return w.commits.Load() >= n, "" })
	}
	for i, step := range []struct{ old, next **proc }{{&a, &b}, {&b, &a}} {
		waitCommits(w.commits.Load() + 50)
		took, err := (*step.old).term(10 * time.Second)
		if err != nil {
			t.Fatalf("step %d: SIGTERM: %v after %s", i, err, took)
		}
		t.Logf("step %d: drained and exited 0 in %s", i, took.Round(time.Millisecond))
		eventually(t, 30*time.Second, "the other instance leads", func() (bool, string) { return (*step.next).leader(), "" })
		*step.old = e.start(t) // the replacement pod
	}
	waitCommits(w.commits.Load() + 50)
	stopWrites()
	converge(t, pool, "edgesync")
	checkStream(t, pool, ns.URL(), "EDGESYNC")
}
