package reconcile

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// referenceTables is the mapping of the reference app schema.
func referenceTables() []domain.Table {
	return []domain.Table{
		{Name: "images", MemoryType: "image", URLColumn: "url", SizeColumn: "size_bytes"},
		{Name: "videos", MemoryType: "video", URLColumn: "url", SizeColumn: "size_bytes"},
		{Name: "notes", MemoryType: "note"},
		{Name: "documents", MemoryType: "document", URLColumn: "url", SizeColumn: "size_bytes"},
		{Name: "audio", MemoryType: "audio", URLColumn: "url", SizeColumn: "size_bytes"},
	}
}

type env struct {
	t    *testing.T
	pool *pgxpool.Pool
	url  string
	reg  *prometheus.Registry // the first service's registry

	served bool
}

func newEnv(t *testing.T) *env {
	t.Helper()
	url := pgtest.New(t)
	return &env{t: t, pool: pgtest.Pool(t, url), url: url, reg: prometheus.NewRegistry()}
}

// service builds a Service on the env's database; the test waits for its
// background runs before the database is dropped.
func (e *env) service(mutate func(*Config)) *Service {
	e.t.Helper()
	cfg := Config{Tables: referenceTables(), StuckAfter: time.Minute, MaxAttempts: 3, ChunkSize: 1000}
	if mutate != nil {
		mutate(&cfg)
	}
	// A registry holds one Service's metrics: later services get a fresh one.
	reg := e.reg
	if e.served {
		reg = prometheus.NewRegistry()
	}
	e.served = true
	s := New(cfg, e.pool, zaptest.NewLogger(e.t, zaptest.Level(zap.WarnLevel)), reg)
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = s.Wait(ctx)
	})
	return s
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func (e *env) int(sql string, args ...any) int64 {
	e.t.Helper()
	var n int64
	if err := e.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (e *env) str(sql string, args ...any) string {
	e.t.Helper()
	var s *string
	if err := e.pool.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	if s == nil {
		return "<null>"
	}
	return *s
}

// memory inserts a memory row and returns its id. url "" means NULL.
func (e *env) memory(table, url string, size int64) string {
	e.t.Helper()
	var id string
	var err error
	if table == "notes" {
		err = e.pool.QueryRow(context.Background(), `INSERT INTO notes (owner_id, body) VALUES (gen_random_uuid(), 'n') RETURNING id::text`).Scan(&id)
	} else {
		var u *string
		if url != "" {
			u = &url
		}
		err = e.pool.QueryRow(context.Background(), `INSERT INTO `+table+` (owner_id, url, size_bytes) VALUES (gen_random_uuid(), $1, $2) RETURNING id::text`, u, size).Scan(&id)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// edge is one storage_edges row to seed.
type edge struct {
	memoryID, memoryType, artifact, backend string
	present                                 bool
	location                                string // "" = NULL
	size                                    int64  // 0 = NULL
	state                                   string // "" = idle
	age                                     time.Duration
}

func (e *env) edge(x edge) {
	e.t.Helper()
	var loc *string
	if x.location != "" {
		loc = &x.location
	}
	var size *int64
	if x.size != 0 {
		size = &x.size
	}
	if x.state == "" {
		x.state = "idle"
	}
	e.exec(`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, location, size_bytes, sync_state, updated_at)
		VALUES ($1::text::uuid, $2::text::memory_type_t, $3::text::artifact_t, $4::text::backend_t, $5, $6, $7, $8::text::sync_t, now() - $9::bigint * interval '1 microsecond')`,
		x.memoryID, x.memoryType, x.artifact, x.backend, x.present, loc, size, x.state, x.age.Microseconds())
}

// web2 seeds the edges section 4 requires for a memory.
func (e *env) web2(id, memoryType, url string, size int64) {
	e.t.Helper()
	e.edge(edge{memoryID: id, memoryType: memoryType, artifact: "metadata", backend: "neon-db", present: true})
	if url != "" {
		e.edge(edge{memoryID: id, memoryType: memoryType, artifact: "asset", backend: "vercel-blob", present: true, location: url, size: size})
	}
}

func (e *env) attempts(id, memoryType string, n int, lastError string, nextIn time.Duration) {
	e.t.Helper()
	e.exec(`INSERT INTO sync_attempts (memory_id, memory_type, backend, attempts, last_error, next_attempt_at)
		VALUES ($1::text::uuid, $2::text::memory_type_t, 'icp-canister', $3, $4, now() + $5::bigint * interval '1 microsecond')`,
		id, memoryType, n, lastError, nextIn.Microseconds())
}

// checksum fingerprints every column of the tables a run may change.
func (e *env) checksum() string {
	e.t.Helper()
	return e.str(`SELECT md5(
		(SELECT coalesce(string_agg(t::text, '|' ORDER BY t::text), '') FROM (SELECT memory_id, memory_type, artifact, backend, present, location,
			content_hash, size_bytes, sync_state, sync_error, last_synced_at, created_at, updated_at FROM storage_edges) t)
		|| '#' ||
		(SELECT coalesce(string_agg(a::text, '|' ORDER BY a::text), '') FROM sync_attempts a))`)
}

// ruleViolations checks CONTRACT section 4 independently of the code under
// test: every memory row of the reference schema has exactly the web2 edges
// its row implies, and no web2 edge exists without its row.
func (e *env) ruleViolations() int64 {
	e.t.Helper()
	return e.int(`WITH expected AS (
		SELECT id, 'image'::memory_type_t AS mt, url, size_bytes FROM images
		UNION ALL SELECT id, 'video', url, size_bytes FROM videos
		UNION ALL SELECT id, 'document', url, size_bytes FROM documents
		UNION ALL SELECT id, 'audio', url, size_bytes FROM audio
		UNION ALL SELECT id, 'note', NULL, NULL FROM notes
	), want AS (
		SELECT id, mt, 'metadata'::artifact_t AS artifact, 'neon-db'::backend_t AS backend, true AS present, NULL::text AS location, NULL::bigint AS size FROM expected
		UNION ALL
		SELECT id, mt, 'asset', 'vercel-blob', true, url, size_bytes FROM expected WHERE url IS NOT NULL
	), have AS (
		SELECT memory_id, memory_type, artifact, backend, present, location,
		       CASE WHEN artifact = 'asset' THEN size_bytes END AS size
		FROM storage_edges WHERE backend <> 'icp-canister' AND present
	), absent_ok AS (
		SELECT e.id FROM storage_edges e JOIN expected x ON x.id = e.memory_id AND x.mt = e.memory_type
		WHERE e.backend = 'vercel-blob' AND e.artifact = 'asset' AND NOT e.present AND e.location IS NULL AND x.url IS NULL
	)
	SELECT (SELECT count(*) FROM (SELECT * FROM want EXCEPT SELECT * FROM have) a)
	     + (SELECT count(*) FROM (SELECT * FROM have EXCEPT SELECT * FROM want) b)
	     + (SELECT count(*) FROM storage_edges e WHERE e.backend <> 'icp-canister' AND NOT e.present AND e.id NOT IN (SELECT id FROM absent_ok))`)
}

// poll waits for cond with a deadline; tests never sleep for an outcome.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func wantReport(t *testing.T, got *Report, want Report) {
	t.Helper()
	if got == nil {
		t.Fatal("no report")
	}
	g := *got
	g.DurationMS, g.ByType, want.ByType = 0, nil, nil
	if fmt.Sprintf("%+v", g) != fmt.Sprintf("%+v", want) {
		t.Errorf("report = %+v\nwant     %+v", g, want)
	}
}
