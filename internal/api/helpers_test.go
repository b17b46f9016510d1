package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/internal/pgtest"
	"github.com/edgesync/edgesync/reconcile"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const testToken = "s3cret-token"

func defaultTables() []domain.Table {
	return []domain.Table{
		{Name: "images", MemoryType: "image", URLColumn: "url", SizeColumn: "size_bytes"},
		{Name: "videos", MemoryType: "video", URLColumn: "url", SizeColumn: "size_bytes"},
		{Name: "notes", MemoryType: "note"},
		{Name: "documents", MemoryType: "document", URLColumn: "url", SizeColumn: "size_bytes"},
		{Name: "audio", MemoryType: "audio", URLColumn: "url", SizeColumn: "size_bytes"},
	}
}

// fakeReconciler stands in for the reconcile runner, which lives in another
// package and needs the whole pipeline; the API only needs its two methods.
type fakeReconciler struct {
	mu       sync.Mutex
	running  bool
	panicky  bool
	block    bool // Get waits for its context to end
	runs     map[string]reconcile.Run
	lastDry  bool
	lastTrig string
}

func (f *fakeReconciler) Start(ctx context.Context, trigger string, dryRun bool) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.panicky {
		panic("reconciler exploded")
	}
	if f.running {
		return "", reconcile.ErrAlreadyRunning
	}
	f.running, f.lastDry, f.lastTrig = true, dryRun, trigger
	id := uuid.NewString()
	if f.runs == nil {
		f.runs = map[string]reconcile.Run{}
	}
	f.runs[id] = reconcile.Run{ID: id, Trigger: trigger, DryRun: dryRun, State: "running", StartedAt: time.Now()}
	return id, nil
}

func (f *fakeReconciler) Get(ctx context.Context, id string) (reconcile.Run, error) {
	f.mu.Lock()
	block := f.block
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return reconcile.Run{}, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.runs[id]
	if !ok {
		return reconcile.Run{}, reconcile.ErrRunNotFound
	}
	return r, nil
}

func (f *fakeReconciler) List(ctx context.Context, limit int) ([]reconcile.Run, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]reconcile.Run, 0, len(f.runs))
	for _, r := range f.runs {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StartedAt.After(out[j].StartedAt) })
	return out[:min(limit, len(out))], nil
}

var _ Reconciler = (*fakeReconciler)(nil)

type env struct {
	t    *testing.T
	pool *pgxpool.Pool
	srv  *Server
	http *httptest.Server
	rec  *fakeReconciler
}

func newEnv(t *testing.T, mutate func(*Config, *Deps)) *env {
	t.Helper()
	pool := pgtest.Pool(t, pgtest.New(t))
	rec := &fakeReconciler{}
	cfg := Config{AdminToken: testToken, Tables: defaultTables(), HandlerTimeout: 5 * time.Second, ICPMirror: true}
	deps := Deps{Pool: pool, Registry: prometheus.NewRegistry(), Reconciler: rec}
	if mutate != nil {
		mutate(&cfg, &deps)
	}
	s := New(cfg, deps)
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	t.Cleanup(s.Events().Close) // before hs.Close (cleanups run last-first): ends streams
	return &env{t: t, pool: pool, srv: s, http: hs, rec: rec}
}

// do sends a request; token "" sends none.
func (e *env) do(method, path, token string, body any) (int, map[string]any, http.Header) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, e.http.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.http.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 && json.Unmarshal(raw, &out) != nil {
		out = map[string]any{"_raw": string(raw)}
	}
	return resp.StatusCode, out, resp.Header
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// image inserts an image with an asset URL (or none) and returns its id.
func (e *env) image(url *string) string {
	e.t.Helper()
	var id string
	if err := e.pool.QueryRow(context.Background(),
		`INSERT INTO images (owner_id, title, url, size_bytes) VALUES (gen_random_uuid(), 't', $1, 10) RETURNING id::text`, url).Scan(&id); err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *env) note() string {
	e.t.Helper()
	var id string
	if err := e.pool.QueryRow(context.Background(),
		`INSERT INTO notes (owner_id, title, body) VALUES (gen_random_uuid(), 't', 'b') RETURNING id::text`).Scan(&id); err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *env) gallery(items ...[2]string) string {
	e.t.Helper()
	var id string
	if err := e.pool.QueryRow(context.Background(),
		`INSERT INTO galleries (owner_id, title) VALUES (gen_random_uuid(), 'g') RETURNING id::text`).Scan(&id); err != nil {
		e.t.Fatal(err)
	}
	for i, it := range items {
		e.exec(`INSERT INTO gallery_items (gallery_id, memory_id, memory_type, position) VALUES ($1, $2, $3, $4)`, id, it[0], it[1], i)
	}
	return id
}

func (e *env) edge(memID, typ, artifact, backend string, present bool, state string) {
	e.t.Helper()
	e.exec(`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, sync_state)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT ON CONSTRAINT storage_edges_key DO UPDATE SET present = EXCLUDED.present, sync_state = EXCLUDED.sync_state`,
		memID, typ, artifact, backend, present, state)
}

func ptr[T any](v T) *T { return &v }

// eventually polls cond until it holds or the deadline passes.
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

func errCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}
