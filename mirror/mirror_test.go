package mirror_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/icp"
	"github.com/edgesync/edgesync/internal/icpreplica"
	"github.com/edgesync/edgesync/internal/pgtest"
	"github.com/edgesync/edgesync/mirror"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func newUUID(t testing.TB) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// asset returns size deterministic pseudo-random bytes and their SHA-256.
func asset(size int, seed uint64) ([]byte, string) {
	b := make([]byte, size)
	r := mrand.NewChaCha8([32]byte{byte(seed)})
	_, _ = r.Read(b)
	return b, hashOf(b)
}

func hashOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// mirrorTables is the reference app schema's mapping.
var mirrorTables = []domain.Table{
	{Name: "images", MemoryType: "image", URLColumn: "url", SizeColumn: "size_bytes"},
	{Name: "videos", MemoryType: "video", URLColumn: "url", SizeColumn: "size_bytes"},
	{Name: "notes", MemoryType: "note"},
	{Name: "documents", MemoryType: "document", URLColumn: "url", SizeColumn: "size_bytes"},
	{Name: "audio", MemoryType: "audio", URLColumn: "url", SizeColumn: "size_bytes"},
}

// mirrorEnv is one test's world: a fresh database, the replica double, a client of it, a blob
// server, and what the mirror logged.
type mirrorEnv struct {
	pool     *pgxpool.Pool
	replica  *icpreplica.Replica
	client   *icp.Client
	blobs    *blobServer
	reg      *prometheus.Registry
	log      *zap.Logger
	logs     *observer.ObservedLogs
	progress progressLog
}

func newMirrorEnv(t testing.TB, clientCfg icp.Config) *mirrorEnv {
	t.Helper()
	pcfg, err := pgxpool.ParseConfig(pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	pcfg.MaxConns = 16 // River's listener and maintenance plus the workers
	// Not UTC, so tests show the metadata document does not depend on the session's time zone.
	pcfg.ConnConfig.RuntimeParams["timezone"] = "America/New_York"
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)).Core(), core))
	if err := mirror.MigrateQueue(context.Background(), pool, log); err != nil {
		t.Fatalf("migrate river: %v", err)
	}
	r := icpreplica.StartTest(t, icpreplica.Config{})
	clientCfg.URL, clientCfg.CanisterID, clientCfg.FetchRootKey = r.URL(), r.CanisterID().String(), true
	if clientCfg.CallTimeout == 0 {
		clientCfg.CallTimeout = 10 * time.Second
	}
	if clientCfg.PollDelay == 0 {
		clientCfg.PollDelay = 10 * time.Millisecond
	}
	c, err := icp.New(clientCfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return &mirrorEnv{pool: pool, replica: r, client: c, blobs: newBlobServer(t), reg: prometheus.NewRegistry(), log: log, logs: logs}
}

// runningMirror is a Mirror whose Run goroutine the test controls.
type runningMirror struct {
	*mirror.Mirror
	cancel  context.CancelFunc
	done    chan error
	stopped sync.Once
}

// testConfig is cfg with fast test settings where cfg leaves a field zero.
func (e *mirrorEnv) testConfig(cfg mirror.Config) mirror.Config {
	cfg.Tables = mirrorTables
	cfg.Subjects = domain.Subjects{Prefix: "test"}
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.RetryBase, 10*time.Millisecond)
	def(&cfg.RetryMax, 200*time.Millisecond)
	def(&cfg.PollInterval, 50*time.Millisecond)
	def(&cfg.FetchTimeout, 5*time.Second)
	def(&cfg.StopTimeout, 2*time.Second)
	if cfg.AssetHosts == nil {
		// The blob server listens on loopback: allowed only because the pattern names it.
		cfg.AssetHosts = hostPatterns(e.blobs.Listener.Addr().String())
	}
	return cfg
}

func hostPatterns(list string) []domain.HostPattern {
	p, err := domain.ParseHostPatterns(list)
	if err != nil {
		panic(err)
	}
	return p
}

// newMirror builds a mirror with fast test settings, its metrics on a fresh registry (which
// becomes e.reg, read by counter).
func (e *mirrorEnv) newMirror(t testing.TB, cfg mirror.Config, deps mirror.Deps) *mirror.Mirror {
	t.Helper()
	e.reg = prometheus.NewRegistry()
	deps.Pool, deps.Log, deps.Metrics = e.pool, e.log, mirror.NewMetrics(e.reg)
	m, err := mirror.New(e.testConfig(cfg), deps)
	if err != nil {
		t.Fatalf("new mirror: %v", err)
	}
	return m
}

// start builds a mirror (see newMirror) on client, e.client when nil, and runs it until stop or
// the end of the test.
func (e *mirrorEnv) start(t testing.TB, cfg mirror.Config, client *icp.Client) *runningMirror {
	t.Helper()
	if client == nil {
		client = e.client
	}
	return e.run(t, e.newMirror(t, cfg, mirror.Deps{Client: client, Publish: e.progress.record}))
}

// run runs m until stop or the end of the test.
func (e *mirrorEnv) run(t testing.TB, m *mirror.Mirror) *runningMirror {
	ctx, cancel := context.WithCancel(context.Background())
	rm := &runningMirror{Mirror: m, cancel: cancel, done: make(chan error, 1)}
	go func() { rm.done <- m.Run(ctx) }()
	t.Cleanup(func() { rm.stop(t) })
	return rm
}

// stop cancels Run and checks that it returns cleanly within a few seconds.
func (rm *runningMirror) stop(t testing.TB) {
	t.Helper()
	rm.stopped.Do(func() {
		rm.cancel()
		select {
		case err := <-rm.done:
			if err != nil {
				t.Errorf("mirror Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("mirror Run did not return within 10s of cancel")
		}
	})
}

// blobServer plays Vercel Blob: files by path, and paths that answer a status or never answer.
type blobServer struct {
	*httptest.Server
	mu       sync.Mutex
	files    map[string][]byte
	status   map[string]int
	hang     map[string]bool
	redirect map[string]string
	hits     int
}

func newBlobServer(t testing.TB) *blobServer {
	b := &blobServer{files: map[string][]byte{}, status: map[string]int{}, hang: map[string]bool{}, redirect: map[string]string{}}
	b.Server = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(func() { b.CloseClientConnections(); b.Close() })
	return b
}

func (b *blobServer) serve(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	data, ok := b.files[r.URL.Path]
	status, hang, to := b.status[r.URL.Path], b.hang[r.URL.Path], b.redirect[r.URL.Path]
	b.hits++
	b.mu.Unlock()
	switch {
	case to != "":
		http.Redirect(w, r, to, http.StatusFound)
	case hang:
		<-r.Context().Done()
	case status != 0:
		http.Error(w, http.StatusText(status), status)
	case !ok:
		http.NotFound(w, r)
	default:
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		_, _ = w.Write(data)
	}
}

// put serves data at a new path and returns its URL.
func (b *blobServer) put(name string, data []byte) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.files["/"+name] = data
	return b.URL + "/" + name
}

func (b *blobServer) fail(name string, status int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.status["/"+name] = status
	return b.URL + "/" + name
}

func (b *blobServer) redirectTo(name, to string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.redirect["/"+name] = to
	return b.URL + "/" + name
}

func (b *blobServer) requests() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hits
}

func (b *blobServer) hangOn(name string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hang["/"+name] = true
	return b.URL + "/" + name
}

// memory inserts a row of an asset table (images, videos, …) and returns its id.
func (e *mirrorEnv) memory(t testing.TB, table, url string, size int) string {
	t.Helper()
	var id string
	err := e.pool.QueryRow(context.Background(), fmt.Sprintf(`INSERT INTO %s (owner_id, title, url, size_bytes, mime_type)
		VALUES (gen_random_uuid(), 'a memory', $1, $2, 'application/octet-stream') RETURNING id::text`, table), url, size).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *mirrorEnv) note(t testing.TB, body string) string {
	t.Helper()
	var id string
	if err := e.pool.QueryRow(context.Background(), `INSERT INTO notes (owner_id, title, body)
		VALUES (gen_random_uuid(), 'a note', $1) RETURNING id::text`, body).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// storeForever does what the API does for a memory: its icp-canister edges become migrating and
// not present (metadata always, the asset when it has one); then the mirror is woken, as the
// pipeline does when it sees the edges change.
func (e *mirrorEnv) storeForever(t testing.TB, m *mirror.Mirror, id, typ string, withAsset bool) {
	t.Helper()
	arts := []string{"metadata"}
	if withAsset {
		arts = append(arts, "asset")
	}
	for _, a := range arts {
		if _, err := e.pool.Exec(context.Background(), `INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, sync_state)
			VALUES ($1, $2, $3, 'icp-canister', false, 'migrating')
			ON CONFLICT ON CONSTRAINT storage_edges_key DO UPDATE SET sync_state = 'migrating', sync_error = NULL`, id, typ, a); err != nil {
			t.Fatal(err)
		}
	}
	m.Wake(id, typ)
}

// requeue is what reconcile does for ICP drift and due retries: the memory's icp edges become
// migrating again, and the pipeline wakes the mirror.
func (e *mirrorEnv) requeue(t testing.TB, m *mirror.Mirror, id, typ string) {
	t.Helper()
	if _, err := e.pool.Exec(context.Background(), `UPDATE storage_edges SET sync_state = 'migrating'
		WHERE memory_id = $1 AND memory_type = $2 AND backend = 'icp-canister'`, id, typ); err != nil {
		t.Fatal(err)
	}
	m.Wake(id, typ)
}

type edgeRow struct {
	Present bool
	State   string
	Error   *string
	Hash    *string
	Size    *int64
	Synced  *time.Time
}

func (e edgeRow) String() string {
	s := func(p *string) string {
		if p == nil {
			return "<nil>"
		}
		return *p
	}
	return fmt.Sprintf("present=%v state=%s error=%q hash=%s", e.Present, e.State, s(e.Error), s(e.Hash))
}

func (e *mirrorEnv) edge(t testing.TB, id, artifact string) edgeRow {
	t.Helper()
	var r edgeRow
	err := e.pool.QueryRow(context.Background(), `SELECT present, sync_state::text, sync_error, content_hash, size_bytes, last_synced_at
		FROM storage_edges WHERE memory_id = $1 AND backend = 'icp-canister' AND artifact = $2`, id, artifact).
		Scan(&r.Present, &r.State, &r.Error, &r.Hash, &r.Size, &r.Synced)
	if err != nil {
		t.Fatalf("edge %s %s: %v", id, artifact, err)
	}
	return r
}

// waitEdge polls until the edge satisfies ok, or fails the test with its last state.
func (e *mirrorEnv) waitEdge(t testing.TB, timeout time.Duration, id, artifact string, ok func(edgeRow) bool) edgeRow {
	t.Helper()
	var last edgeRow
	waitFor(t, timeout, func() (bool, string) {
		last = e.edge(t, id, artifact)
		return ok(last), last.String()
	})
	return last
}

func stored(e edgeRow) bool { return e.Present && e.State == "idle" }
func failed(e edgeRow) bool { return e.State == "failed" }

// waitFor polls cond every 10 ms until it holds, or fails the test after timeout with cond's
// last description.
func waitFor(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, desc := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not reached within %s: %s", timeout, desc)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not a wait for an outcome
	}
}

func (e *mirrorEnv) attempts(t testing.TB, id string) (n int, next *time.Time) {
	t.Helper()
	err := e.pool.QueryRow(context.Background(), `SELECT coalesce(max(attempts), 0), max(next_attempt_at) FROM sync_attempts
		WHERE memory_id = $1 AND backend = 'icp-canister'`, id).Scan(&n, &next)
	if err != nil {
		t.Fatal(err)
	}
	return n, next
}

// counter returns the value of a counter (or gauge) in the env's registry; 0 when absent.
func (e *mirrorEnv) counter(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !found {
					continue metrics
				}
			}
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// dumpJobs logs River's jobs when the test failed, to tell a lost wake from a failed job.
func (e *mirrorEnv) dumpJobs(t testing.TB) {
	if !t.Failed() {
		return
	}
	rows, err := e.pool.Query(context.Background(), `SELECT id, state::text, attempt, args::text, errors::text FROM river_job ORDER BY id`)
	if err != nil {
		t.Logf("river jobs: %v", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var state, args string
		var errs *string
		var attempt int
		if err := rows.Scan(&id, &state, &attempt, &args, &errs); err != nil {
			t.Logf("river jobs: %v", err)
			return
		}
		t.Logf("river job %d %s attempt %d %s %v", id, state, attempt, args, errs)
	}
}

// progressLog records the progress messages a mirror publishes.
type progressLog struct {
	mu    sync.Mutex
	calls map[string][][2]int64
	bad   []string
}

func (p *progressLog) record(subject string, data []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var msg cdc.ProgressEvent
	if err := json.Unmarshal(data, &msg); err != nil || subject != "test.sync.progress" || msg.At.IsZero() {
		p.bad = append(p.bad, fmt.Sprintf("%s %s (%v)", subject, data, err))
		return nil
	}
	if p.calls == nil {
		p.calls = map[string][][2]int64{}
	}
	p.calls[msg.MemoryID] = append(p.calls[msg.MemoryID], [2]int64{msg.BytesDone, msg.BytesTotal})
	return nil
}

func (p *progressLog) of(id string) [][2]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][2]int64(nil), p.calls[id]...)
}

func TestMirror_storeForeverGallery(t *testing.T) {
	e := newMirrorEnv(t, icp.Config{})
	m := e.start(t, mirror.Config{}, nil)
	progress := &e.progress
	ctx := context.Background()

	type memory struct {
		id, typ string
		data    []byte
	}
	var mems []memory
	for i, size := range []int{1, 10 << 10, 300 << 10} {
		data, _ := asset(size, uint64(i+1))
		url := e.blobs.put(fmt.Sprintf("img-%d.jpg", i), data)
		mems = append(mems, memory{e.memory(t, "images", url, size), "image", data})
	}
	big, _ := asset(3<<20, 9) // more than one 2 MiB chunk
	mems = append(mems, memory{e.memory(t, "videos", e.blobs.put("film.mp4", big), len(big)), "video", big})
	mems = append(mems, memory{e.note(t, "the first snow of the winter"), "note", nil})

	var gallery string
	if err := e.pool.QueryRow(ctx, `INSERT INTO galleries (owner_id, title) VALUES (gen_random_uuid(), 'winter') RETURNING id::text`).Scan(&gallery); err != nil {
		t.Fatal(err)
	}
	for i, mem := range mems {
		if _, err := e.pool.Exec(ctx, `INSERT INTO gallery_items (gallery_id, memory_id, memory_type, position) VALUES ($1, $2, $3, $4)`,
			gallery, mem.id, mem.typ, i); err != nil {
			t.Fatal(err)
		}
	}
	for _, mem := range mems {
		e.storeForever(t, m.Mirror, mem.id, mem.typ, mem.data != nil)
		// The daemon wakes once per edge event; more wakes must not make more work.
		for range 3 {
			m.Wake(mem.id, mem.typ)
		}
	}

	for _, mem := range mems {
		meta := e.waitEdge(t, 30*time.Second, mem.id, "metadata", stored)
		if mem.data != nil {
			e.waitEdge(t, 30*time.Second, mem.id, "asset", stored)
		}
		st, err := m.Checker().Status(ctx, mem.id)
		if err != nil {
			t.Fatal(err)
		}
		metaHash, assetHash, assetSize := st.Metadata.Hash, st.Asset.Hash, st.Asset.Size
		if meta.Hash == nil || *meta.Hash != metaHash || meta.Error != nil || meta.Synced == nil {
			t.Errorf("%s metadata edge %v; canister holds %s", mem.typ, meta, metaHash)
		}
		if mem.data == nil {
			if assetHash != "" {
				t.Errorf("note has an asset on ICP: %s", assetHash)
			}
			// The document is the row as JSON rendered in UTC, whatever the session's zone.
			var doc string
			if err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `SET LOCAL TimeZone = 'UTC'`); err != nil {
					return err
				}
				return tx.QueryRow(ctx, `SELECT row_to_json(n)::text FROM notes n WHERE id = $1`, mem.id).Scan(&doc)
			}); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(doc, "+00:00") || hashOf([]byte(doc)) != metaHash {
				t.Errorf("note metadata hash %s; want the hash of %s", metaHash, doc)
			}
			continue
		}
		a := e.waitEdge(t, 30*time.Second, mem.id, "asset", stored)
		want := hashOf(mem.data)
		if a.Hash == nil || *a.Hash != want || a.Size == nil || *a.Size != int64(len(mem.data)) {
			t.Errorf("%s asset edge %v size %v; want hash %s size %d", mem.typ, a, a.Size, want, len(mem.data))
		}
		if assetHash != want || assetSize != int64(len(mem.data)) {
			t.Errorf("canister holds asset %s (%d bytes); want %s (%d)", assetHash, assetSize, want, len(mem.data))
		}
		calls := progress.of(mem.id)
		if len(calls) == 0 || calls[len(calls)-1] != [2]int64{int64(len(mem.data)), int64(len(mem.data))} {
			t.Errorf("%s progress calls %v; want the last to be done = total", mem.typ, calls)
		}
	}

	var status string
	var complete int
	if err := e.pool.QueryRow(ctx, `SELECT status, icp_complete_memories FROM gallery_presence WHERE gallery_id = $1`, gallery).Scan(&status, &complete); err != nil {
		t.Fatal(err)
	}
	if status != "stored_forever" || complete != len(mems) {
		t.Errorf("gallery status %s with %d complete memories; want stored_forever with %d", status, complete, len(mems))
	}
	var left int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM sync_attempts`).Scan(&left); err != nil || left != 0 {
		t.Errorf("sync_attempts rows left: %d (%v)", left, err)
	}
	if got, want := e.counter(t, "edgesync_icp_upload_bytes_total"), float64(1+10<<10+300<<10+3<<20); got != want {
		t.Errorf("upload bytes counted %.0f; want %.0f", got, want)
	}
	// A job counts itself after its edges are stored: poll, the last one may still be finishing.
	waitFor(t, 10*time.Second, func() (bool, string) {
		n := e.counter(t, "edgesync_icp_jobs_total", "result", "ok")
		return n >= float64(len(mems)), fmt.Sprintf("jobs ok = %.0f; want at least %d", n, len(mems))
	})
	if bad := progress.bad; len(bad) > 0 {
		t.Errorf("malformed progress messages: %v", bad)
	}
	if n := e.counter(t, "edgesync_icp_uploads_in_progress"); n != 0 {
		t.Errorf("uploads in progress after the end: %.0f", n)
	}

	t.Run("repeated request uploads nothing", func(t *testing.T) {
		before := e.replica.Stats().Calls
		for _, mem := range mems {
			e.requeue(t, m.Mirror, mem.id, mem.typ)
		}
		t.Cleanup(func() { e.dumpJobs(t) })
		for _, mem := range mems {
			e.waitEdge(t, 30*time.Second, mem.id, "metadata", stored)
			if mem.data != nil {
				a := e.waitEdge(t, 30*time.Second, mem.id, "asset", stored)
				if *a.Hash != hashOf(mem.data) {
					t.Errorf("asset hash changed to %s", *a.Hash)
				}
			}
		}
		after := e.replica.Stats().Calls
		if after[icp.MethodPutChunk] != before[icp.MethodPutChunk] || after[icp.MethodCommitAsset] != before[icp.MethodCommitAsset] {
			t.Errorf("a repeated request sent chunks or commits: before %v, after %v", before, after)
		}
	})
}

func TestMirror_Wake(t *testing.T) {
	ctx := context.Background()
	jobs := func(t *testing.T, e *mirrorEnv, id string) int {
		t.Helper()
		var n int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = $1 AND args->>'memory_id' = $2`, mirror.JobKind, id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	t.Run("bad input dropped with a log line, never a panic", func(t *testing.T) {
		e := newMirrorEnv(t, icp.Config{})
		m := e.newMirror(t, mirror.Config{}, mirror.Deps{Client: e.client})
		for _, id := range []string{"not-a-uuid", "6F9619FF-8B86-D011-B42D-00C04FC964FF", "{6f9619ff-8b86-d011-b42d-00c04fc964ff}", ""} {
			m.Wake(id, "image")
		}
		m.Wake(newUUID(t), "hologram")
		if n := e.logs.FilterMessage("icp wake with a memory id that is not a canonical UUID; dropped").Len(); n != 4 {
			t.Errorf("%d invalid ids logged; want 4", n)
		}
		if n := e.logs.FilterMessage("icp wake of a memory type without a table mapping; dropped").Len(); n != 1 {
			t.Errorf("%d unmapped types logged; want 1", n)
		}
		if n := mirror.QueuedWakes(m); n != 0 {
			t.Errorf("%d bad wakes queued", n)
		}
	})

	t.Run("many wakes, one job, while the replica is unreachable", func(t *testing.T) {
		e := newMirrorEnv(t, icp.Config{})
		// Nothing listens on the replica URL: Run keeps connecting, and still queues the wakes.
		cfg := mirror.Config{ICP: icp.Config{URL: "http://127.0.0.1:1", CanisterID: e.replica.CanisterID().String(), FetchRootKey: true}}
		m := e.run(t, e.newMirror(t, cfg, mirror.Deps{}))
		id := newUUID(t)
		for range 20 {
			m.Wake(id, "image")
		}
		waitFor(t, 10*time.Second, func() (bool, string) {
			n, q := jobs(t, e, id), mirror.QueuedWakes(m.Mirror)
			return n == 1 && q == 0, fmt.Sprintf("%d jobs, %d wakes queued", n, q)
		})
		if n := e.logs.FilterMessage("ICP replica unreachable; the mirror waits").Len(); n == 0 {
			t.Errorf("no log line says the replica is unreachable")
		}
		if _, err := m.Checker().Status(ctx, id); err == nil {
			t.Errorf("the checker answered without a connected client")
		}
	})

	t.Run("a full wake queue never blocks; the scan finds the dropped memories", func(t *testing.T) {
		e := newMirrorEnv(t, icp.Config{})
		m := e.newMirror(t, mirror.Config{WakeQueue: 1}, mirror.Deps{Client: e.client})
		var ids []string
		for i := range 5 {
			id := e.note(t, fmt.Sprintf("note %d", i))
			ids = append(ids, id)
			e.storeForever(t, m, id, "note", false) // returns although the queue holds one wake
		}
		if n := mirror.QueuedWakes(m); n != 1 {
			t.Fatalf("%d wakes queued; want 1 (the queue's capacity)", n)
		}
		e.run(t, m)
		for _, id := range ids {
			e.waitEdge(t, 30*time.Second, id, "metadata", stored)
		}
	})
}

func TestMirror_failures(t *testing.T) {
	e := newMirrorEnv(t, icp.Config{})
	m := e.start(t, mirror.Config{MaxAttempts: 3, FetchTimeout: 400 * time.Millisecond}, nil)

	gone := e.memory(t, "images", e.blobs.fail("gone.jpg", http.StatusNotFound), 100)
	slow := e.memory(t, "images", e.blobs.hangOn("slow.jpg"), 100)
	data, _ := asset(50<<10, 3)
	good := e.memory(t, "images", e.blobs.put("good.jpg", data), len(data))
	for _, id := range []string{gone, slow, good} {
		e.storeForever(t, m.Mirror, id, "image", true)
	}

	ok := e.waitEdge(t, 30*time.Second, good, "asset", stored)
	if *ok.Hash != hashOf(data) {
		t.Errorf("good asset hash %s", *ok.Hash)
	}
	// The slow memory needs three stalled downloads (≥ 1.2 s) to fail: the good one must not
	// have waited for it.
	if s := e.edge(t, slow, "asset"); s.State != "migrating" {
		t.Errorf("slow memory already %s when the good one was stored: it should still be retrying", s.State)
	}

	for _, c := range []struct {
		id, want string
	}{
		{gone, "asset URL answered 404: the file is gone from Vercel Blob; re-upload it or remove the memory"},
		{slow, "the asset download timed out (no data for 400ms)"},
	} {
		f := e.waitEdge(t, 30*time.Second, c.id, "asset", failed)
		if f.Present || f.Error == nil || !strings.HasPrefix(*f.Error, c.want) || !strings.Contains(*f.Error, "gave up after 3 attempts") {
			t.Errorf("failed edge %v; want sync_error starting %q and saying it gave up", f, c.want)
		}
		// Metadata needs no download: it is stored even though the asset failed.
		if meta := e.edge(t, c.id, "metadata"); !stored(meta) {
			t.Errorf("metadata edge %v; want stored", meta)
		}
		// The round is over; the next one is scheduled RoundBase (10 min by default) from now.
		n, next := e.attempts(t, c.id)
		if n != 3 || next == nil || time.Until(*next) < 9*time.Minute || time.Until(*next) > 11*time.Minute {
			t.Errorf("sync_attempts: %d attempts, next %v; want 3 and the next round in about 10 minutes", n, next)
		}
		if !strings.Contains(*f.Error, "round 1 of 10 gave up after 3 attempts; edgesync tries again after ") {
			t.Errorf("sync_error %q does not say when edgesync tries again", *f.Error)
		}
	}
	waitFor(t, 10*time.Second, func() (bool, string) {
		f, r := e.counter(t, "edgesync_icp_jobs_total", "result", "failed"), e.counter(t, "edgesync_icp_jobs_total", "result", "retry")
		return f == 2 && r == 4, fmt.Sprintf("jobs failed %.0f, retry %.0f; want 2 and 4", f, r)
	})
	if n := e.counter(t, "edgesync_icp_upload_failures_total"); n != 6 {
		t.Errorf("upload failures %.0f; want 6", n)
	}
}

func TestMirror_deletedMemory(t *testing.T) {
	e := newMirrorEnv(t, icp.Config{})
	m := e.start(t, mirror.Config{}, nil)
	id := e.memory(t, "images", e.blobs.put("x.jpg", []byte("x")), 1)
	if _, err := e.pool.Exec(context.Background(), `DELETE FROM images WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	e.storeForever(t, m.Mirror, id, "image", true)
	for _, art := range []string{"metadata", "asset"} {
		f := e.waitEdge(t, 20*time.Second, id, art, failed)
		if f.Error == nil || *f.Error != mirror.NoteMemoryDeleted {
			t.Errorf("%s edge %v; want sync_error %q", art, f, mirror.NoteMemoryDeleted)
		}
	}
	if n, _ := e.attempts(t, id); n != 1 {
		t.Errorf("%d attempts recorded; want 1 (no retries for a deleted memory)", n)
	}
}

func TestMirror_replicaDown(t *testing.T) {
	e := newMirrorEnv(t, icp.Config{CallTimeout: 2 * time.Second})
	m := e.start(t, mirror.Config{MaxAttempts: 100, RetryMax: 100 * time.Millisecond}, nil)
	data, _ := asset(20<<10, 4)
	id := e.memory(t, "audio", e.blobs.put("song.ogg", data), len(data))

	if err := e.replica.Stop(); err != nil {
		t.Fatal(err)
	}
	e.storeForever(t, m.Mirror, id, "audio", true)
	waitFor(t, 20*time.Second, func() (bool, string) {
		n, _ := e.attempts(t, id)
		return n >= 2, fmt.Sprintf("%d attempts while the replica is down", n)
	})
	mid := e.edge(t, id, "metadata")
	if mid.State != "migrating" || mid.Error == nil || !strings.Contains(*mid.Error, "could not be reached") {
		t.Errorf("while the replica is down the edge is %v; want migrating with a note", mid)
	}
	if err := e.replica.Restart(true); err != nil {
		t.Fatal(err)
	}
	a := e.waitEdge(t, 20*time.Second, id, "asset", stored)
	if *a.Hash != hashOf(data) || a.Error != nil {
		t.Errorf("asset edge after the replica came back: %v", a)
	}
	if n, _ := e.attempts(t, id); n != 0 {
		t.Errorf("sync_attempts not cleared after success: %d", n)
	}
}

// TestMirror_resume kills a mirror mid-upload (its context ends while chunks are in flight) and
// checks that a new mirror sends only the chunks the canister lacks.
func TestMirror_resume(t *testing.T) {
	const chunk = 64 << 10
	cfg := icp.Config{ChunkSize: chunk, Parallelism: 1}
	e := newMirrorEnv(t, cfg)
	data, want := asset(20*chunk, 5) // 20 chunks
	id := e.memory(t, "videos", e.blobs.put("long.mp4", data), len(data))

	e.replica.SetLatency(40 * time.Millisecond)
	// A short stop timeout, so the upload cannot finish during the graceful part of the stop.
	first := e.start(t, mirror.Config{StopTimeout: 200 * time.Millisecond}, nil)
	e.storeForever(t, first.Mirror, id, "video", true)
	waitFor(t, 20*time.Second, func() (bool, string) {
		n := e.replica.Stats().Calls[icp.MethodPutChunk]
		return n >= 5, fmt.Sprintf("%d chunks arrived", n)
	})
	first.stop(t)
	e.replica.SetLatency(0)
	if s := e.edge(t, id, "asset"); s.State != "migrating" || s.Error != nil {
		t.Errorf("after the kill the asset edge is %v; want migrating without an error (a shutdown is no failure)", s)
	}

	// The canister's view of the unfinished upload, once every call of the first mirror has ended:
	// a call the stopped client gave up on can still reach the replica (it sleeps 40 ms first), so
	// the count must also have stayed the same for longer than that.
	var held, lastSent int
	var lastChange time.Time
	waitFor(t, 10*time.Second, func() (bool, string) {
		st, err := e.client.Status(context.Background(), id)
		if err != nil || st.Upload == nil {
			return false, fmt.Sprintf("status %+v, %v", st, err)
		}
		held = len(st.Upload.Received)
		sent := e.replica.Stats().Calls[icp.MethodPutChunk]
		if sent != lastSent || lastChange.IsZero() {
			lastSent, lastChange = sent, time.Now()
		}
		settled := time.Since(lastChange) > 200*time.Millisecond
		return sent == held && settled, fmt.Sprintf("%d chunks executed, %d held", sent, held)
	})
	if held == 0 || held >= 20 {
		t.Fatalf("%d of 20 chunks held after the kill; the test needs a partial upload", held)
	}
	before := e.replica.Stats().Calls[icp.MethodPutChunk]

	e.start(t, mirror.Config{}, newClientCfg(t, e, cfg)) // a new process: new client, new mirror
	a := e.waitEdge(t, 30*time.Second, id, "asset", stored)
	if *a.Hash != want {
		t.Errorf("asset hash %s; want %s", *a.Hash, want)
	}
	if sent := e.replica.Stats().Calls[icp.MethodPutChunk] - before; sent != 20-held {
		t.Errorf("the second mirror sent %d chunks; want only the %d missing", sent, 20-held)
	}
}

func newClientCfg(t *testing.T, e *mirrorEnv, cfg icp.Config) *icp.Client {
	t.Helper()
	cfg.URL, cfg.CanisterID, cfg.FetchRootKey, cfg.PollDelay = e.replica.URL(), e.replica.CanisterID().String(), true, 10*time.Millisecond
	c, err := icp.New(cfg, e.log)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMirror_hashMismatch(t *testing.T) {
	const chunk = 64 << 10
	cfg := icp.Config{ChunkSize: chunk}
	ctx := context.Background()

	t.Run("corrupt chunk caught on commit, upload starts over", func(t *testing.T) {
		e := newMirrorEnv(t, cfg)
		data, want := asset(4*chunk, 6)
		id := e.memory(t, "documents", e.blobs.put("doc.pdf", data), len(data))
		// Another writer left an unfinished upload with the right parameters but a wrong chunk 0.
		if _, err := e.client.BeginAsset(ctx, id, int64(len(data)), want); err != nil {
			t.Fatal(err)
		}
		if _, err := e.client.PutChunk(ctx, id, 0, bytes.Repeat([]byte{0xff}, chunk)); err != nil {
			t.Fatal(err)
		}
		m := e.start(t, mirror.Config{}, nil)
		e.storeForever(t, m.Mirror, id, "document", true)
		a := e.waitEdge(t, 30*time.Second, id, "asset", stored)
		if *a.Hash != want {
			t.Errorf("asset hash %s; want %s", *a.Hash, want)
		}
		if n := e.logs.FilterMessage("icp mirror attempt failed; will retry").
			FilterField(zap.String("sync_error", "the uploaded file did not verify on ICP (SHA-256 mismatch); the canister discarded the upload and the next attempt sends it again")).Len(); n != 1 {
			t.Errorf("hash mismatch reported %d times; want 1", n)
		}
		if calls := e.replica.Stats().Calls; calls[icp.MethodCommitAsset] != 2 {
			t.Errorf("commits %d; want 2 (the refused one and the good one)", calls[icp.MethodCommitAsset])
		}
	})

	t.Run("canister holds another file", func(t *testing.T) {
		e := newMirrorEnv(t, cfg)
		m := e.start(t, mirror.Config{}, nil)
		first, firstHash := asset(3*chunk, 7)
		id := e.memory(t, "images", e.blobs.put("photo.jpg", first), len(first))
		e.storeForever(t, m.Mirror, id, "image", true)
		e.waitEdge(t, 30*time.Second, id, "asset", stored)

		// The blob changes under the same URL; a later request must not overwrite ICP.
		second, _ := asset(3*chunk, 8)
		e.blobs.put("photo.jpg", second)
		e.requeue(t, m.Mirror, id, "image")
		f := e.waitEdge(t, 30*time.Second, id, "asset", failed)
		if f.Error == nil || !strings.HasPrefix(*f.Error, "ICP already holds different file for this memory (stored hash "+firstHash[:12]) {
			t.Errorf("asset edge %v; want a conflict note naming the stored hash", f)
		}
		st, err := m.Checker().Status(ctx, id)
		if assetHash := st.Asset.Hash; err != nil || assetHash != firstHash {
			t.Errorf("canister asset %s, %v; want the first file %s untouched", assetHash, err, firstHash)
		}
		if n, _ := e.attempts(t, id); n != 1 {
			t.Errorf("%d attempts; a conflict is not retried", n)
		}
	})

	t.Run("a metadata conflict stops the asset's download", func(t *testing.T) {
		e := newMirrorEnv(t, cfg)
		// The download would hang for a minute; the metadata call, running beside it, fails at
		// once and must cancel it.
		m := e.start(t, mirror.Config{FetchTimeout: time.Minute}, nil)
		id := e.memory(t, "images", e.blobs.hangOn("stuck.jpg"), 100)
		if _, err := e.client.PutMetadata(ctx, id, []byte(`{"title":"another"}`)); err != nil {
			t.Fatal(err)
		}
		e.storeForever(t, m.Mirror, id, "image", true)
		for _, art := range []string{"metadata", "asset"} {
			f := e.waitEdge(t, 30*time.Second, id, art, failed)
			if f.Error == nil || !strings.HasPrefix(*f.Error, "ICP already holds different metadata for this memory") {
				t.Errorf("%s edge %v; want the metadata conflict note", art, f)
			}
		}
		if calls := e.replica.Stats().Calls; calls[icp.MethodBeginAsset] != 0 {
			t.Errorf("%d begin_asset calls; the asset should not have been uploaded", calls[icp.MethodBeginAsset])
		}
	})

	t.Run("canister holds other metadata", func(t *testing.T) {
		e := newMirrorEnv(t, cfg)
		m := e.start(t, mirror.Config{}, nil)
		id := e.note(t, "v2")
		if _, err := e.client.PutMetadata(ctx, id, []byte(`{"body":"v1"}`)); err != nil {
			t.Fatal(err)
		}
		e.storeForever(t, m.Mirror, id, "note", false)
		f := e.waitEdge(t, 30*time.Second, id, "metadata", failed)
		if f.Error == nil || !strings.HasPrefix(*f.Error, "ICP already holds different metadata for this memory") {
			t.Errorf("metadata edge %v; want a conflict note", f)
		}
	})
}

// TestMirror_assetHosts feeds the fetcher URLs that must not be fetched: hosts outside
// EDGESYNC_ASSET_HOSTS, redirects out of it (one to the cloud metadata address), and an allowed
// host name that resolves to loopback. Each ends failed, at once, with a sync_error naming the
// host and the setting; only the explicitly allowed 127.0.0.1:PORT is fetched.
func TestMirror_assetHosts(t *testing.T) {
	e := newMirrorEnv(t, icp.Config{})
	other := newBlobServer(t) // a host that is not allowed, e.g. an internal service
	port := e.blobs.Listener.Addr().(*net.TCPAddr).Port
	allowed := fmt.Sprintf("*.example, localhost:%d, 127.0.0.1:%d", port, port)
	m := e.start(t, mirror.Config{AssetHosts: hostPatterns(allowed), MaxAttempts: 3}, nil)

	secret := other.put("secret.json", []byte(`{"token":"internal"}`))
	data, _ := asset(10<<10, 11)
	cases := []struct {
		name, url, want string
	}{
		{"disallowed host", secret,
			fmt.Sprintf("the asset host %s is not in EDGESYNC_ASSET_HOSTS", other.Listener.Addr())},
		{"redirect to a disallowed host", e.blobs.redirectTo("r1.jpg", secret),
			fmt.Sprintf("the asset URL redirected to host %s is not in EDGESYNC_ASSET_HOSTS", other.Listener.Addr())},
		{"redirect to the metadata address", e.blobs.redirectTo("r2.jpg", "http://169.254.169.254/latest/meta-data/"),
			"the asset URL redirected to host 169.254.169.254 is not in EDGESYNC_ASSET_HOSTS"},
		{"allowed name resolving to loopback", fmt.Sprintf("http://localhost:%d/%s", port, "x.jpg"),
			fmt.Sprintf("the asset host localhost:%d resolves to 127.0.0.1, a loopback address edgesync does not fetch from; if that is intended (local development), name the address itself in EDGESYNC_ASSET_HOSTS (e.g. 127.0.0.1:%d)", port, port)},
		{"not http", "file:///etc/passwd", "the asset URL is not an http(s) URL"},
	}
	e.blobs.put("x.jpg", data)
	ids := map[string]string{}
	for _, c := range cases {
		ids[c.name] = e.memory(t, "images", c.url, 100)
		e.storeForever(t, m.Mirror, ids[c.name], "image", true)
	}
	good := e.memory(t, "images", e.blobs.put("ok.jpg", data), len(data))
	e.storeForever(t, m.Mirror, good, "image", true)

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := e.waitEdge(t, 30*time.Second, ids[c.name], "asset", failed)
			if f.Error == nil || !strings.HasPrefix(*f.Error, c.want) {
				t.Errorf("asset edge %v;\nwant sync_error starting %q", f, c.want)
			}
			if n, _ := e.attempts(t, ids[c.name]); n != 1 {
				t.Errorf("%d attempts; a refused host is not retried", n)
			}
		})
	}
	t.Run("explicit 127.0.0.1:PORT fetched", func(t *testing.T) {
		a := e.waitEdge(t, 30*time.Second, good, "asset", stored)
		if *a.Hash != hashOf(data) {
			t.Errorf("asset hash %s; want %s", *a.Hash, hashOf(data))
		}
	})
	if n := other.requests(); n != 0 {
		t.Errorf("the disallowed host got %d requests; want none", n)
	}
}

// TestMirror_runAgain: the daemon runs one Mirror per process and calls Run again for every
// leadership term; a second Run while one runs is refused.
func TestMirror_runAgain(t *testing.T) {
	e := newMirrorEnv(t, icp.Config{})
	m := e.newMirror(t, mirror.Config{}, mirror.Deps{Client: e.client})
	first := e.run(t, m)
	a := e.note(t, "first term")
	e.storeForever(t, m, a, "note", false)
	e.waitEdge(t, 30*time.Second, a, "metadata", stored)
	if err := m.Run(context.Background()); err == nil {
		t.Errorf("a second Run while the first runs was accepted")
	}
	first.stop(t)

	b := e.note(t, "while no leader")
	e.storeForever(t, m, b, "note", false) // queued while nothing runs
	e.run(t, m)
	e.waitEdge(t, 30*time.Second, b, "metadata", stored)
}

// TestMirror_assetTooLarge: an asset over the limit fails at once, before any download when the
// size column says so, with a note that says what to do: at the canister's maximum (the default)
// no setting helps; under it, EDGESYNC_ASSET_MAX_BYTES may be raised up to the maximum. A limit
// over what the canister stores is refused when the mirror is built.
func TestMirror_assetTooLarge(t *testing.T) {
	e := newMirrorEnv(t, icp.Config{})
	if _, err := mirror.New(e.testConfig(mirror.Config{AssetMaxBytes: domain.MaxAssetBytes + 1}),
		mirror.Deps{Pool: e.pool, Metrics: mirror.NewMetrics(prometheus.NewRegistry())}); err == nil ||
		!strings.Contains(err.Error(), "more than the canister stores") {
		t.Errorf("mirror.New with a limit over the canister's: %v; want a refusal", err)
	}

	t.Run("over the canister's maximum", func(t *testing.T) {
		m := e.start(t, mirror.Config{}, nil)
		before := e.blobs.requests()
		id := e.memory(t, "videos", e.blobs.put("huge.mp4", []byte("not really 100 MiB")), 100<<20)
		e.storeForever(t, m.Mirror, id, "video", true)
		f := e.waitEdge(t, 20*time.Second, id, "asset", failed)
		want := "the file is 100.0 MiB, more than the 64.0 MiB the ICP canister stores; store a smaller file"
		if f.Error == nil || !strings.HasPrefix(*f.Error, want) {
			t.Errorf("asset edge %v; want sync_error starting %q", f, want)
		}
		if n := e.blobs.requests() - before; n != 0 {
			t.Errorf("%d downloads; the size column alone should have refused it", n)
		}
		if n, _ := e.attempts(t, id); n != 1 {
			t.Errorf("%d attempts; too large is not retried", n)
		}
		if meta := e.waitEdge(t, 20*time.Second, id, "metadata", stored); !stored(meta) {
			t.Errorf("metadata edge %v; want stored even though the asset is too large", meta)
		}
		m.stop(t)
	})

	t.Run("over a lower setting", func(t *testing.T) {
		m := e.start(t, mirror.Config{AssetMaxBytes: 1 << 20}, nil)
		data, _ := asset(2<<20, 5)
		id := e.memory(t, "images", e.blobs.put("big.jpg", data), 0) // the row understates it: Content-Length tells
		e.storeForever(t, m.Mirror, id, "image", true)
		f := e.waitEdge(t, 20*time.Second, id, "asset", failed)
		want := "the file is 2.0 MiB, more than the 1.0 MiB limit (EDGESYNC_ASSET_MAX_BYTES, at most 64.0 MiB); raise the limit or remove the memory"
		if f.Error == nil || !strings.HasPrefix(*f.Error, want) {
			t.Errorf("asset edge %v; want sync_error starting %q", f, want)
		}
		m.stop(t)
	})
}
