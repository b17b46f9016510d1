package api

import (
	"context"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgesync/edgesync/internal/pgtest"
	"github.com/edgesync/edgesync/internal/presencecache"
)

// newCachedEnv is an API with a presence cache that follows (the tests call
// its invalidations as the stream feed would).
func newCachedEnv(t *testing.T, cfg presencecache.Config) (*env, *presencecache.Cache) {
	t.Helper()
	c := presencecache.New(cfg, nil)
	e := newEnv(t, func(_ *Config, d *Deps) { d.Presence = c })
	c.Following(true)
	return e, c
}

func galleryOf(t *testing.T, body map[string]any) map[string]any {
	t.Helper()
	g, ok := body["gallery"].(map[string]any)
	if !ok {
		t.Fatalf("no gallery in %v", body)
	}
	return g
}

func icpOf(t *testing.T, body map[string]any, memID string) any {
	t.Helper()
	for _, m := range body["memories"].([]any) {
		if m := m.(map[string]any); m["memory_id"] == memID {
			return m["meta_icp"]
		}
	}
	t.Fatalf("memory %s not on the page %v", memID, body)
	return nil
}

// TestPresenceCache_GalleryHitMissInvalidate: the first page comes from
// memory (source memory, as_of when read, the counts' own source kept); a
// change in Postgres is not seen until its edge event invalidates the
// memory, then it is; cursor pages and fresh=true always read Postgres.
func TestPresenceCache_GalleryHitMissInvalidate(t *testing.T) {
	e, c := newCachedEnv(t, presencecache.Config{TTL: time.Minute})
	var items [][2]string
	for i := 0; i < 3; i++ {
		n := e.note()
		e.edge(n, "note", "metadata", "neon-db", true, "idle")
		items = append(items, [2]string{n, "note"})
	}
	g := e.gallery(items...)
	first := items[0][0]

	before := time.Now().UTC().Add(-time.Second)
	code, body, hdr := e.do("GET", "/api/galleries/"+g+"/presence", "", nil)
	if code != 200 {
		t.Fatalf("%d %v", code, body)
	}
	gal := galleryOf(t, body)
	if gal["source"] != "memory" || gal["counts_source"] != "live" || gal["counts_as_of"] != nil {
		t.Fatalf("a cached answer says %v", gal)
	}
	asOf, err := time.Parse(time.RFC3339Nano, gal["as_of"].(string))
	if err != nil || asOf.Before(before) || asOf.After(time.Now().Add(time.Second)) {
		t.Fatalf("as_of %v (%v)", gal["as_of"], err)
	}
	if hdr.Get("Content-Length") == "" || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("headers %v", hdr)
	}
	if icpOf(t, body, first) != false {
		t.Fatal("meta_icp before the change")
	}

	// The change is in Postgres, but no event said so: the answer is the
	// cached one (this is what makes it a cache).
	e.edge(first, "note", "metadata", "icp-canister", true, "idle")
	_, body, _ = e.do("GET", "/api/galleries/"+g+"/presence", "", nil)
	if icpOf(t, body, first) != false || galleryOf(t, body)["as_of"] != gal["as_of"] {
		t.Fatalf("a second request read Postgres again: %v", body)
	}
	// A cursor page and fresh=true read Postgres.
	_, body, _ = e.do("GET", "/api/galleries/"+g+"/presence?fresh=true", "", nil)
	if galleryOf(t, body)["source"] != "live" || icpOf(t, body, first) != true {
		t.Fatalf("fresh=true: %v", body)
	}

	// The edge event arrives.
	c.MemoryChanged(first, "note")
	_, body, _ = e.do("GET", "/api/galleries/"+g+"/presence", "", nil)
	if icpOf(t, body, first) != true || galleryOf(t, body)["source"] != "memory" {
		t.Fatalf("after the edge event: %v", body)
	}
	// A gallery status event drops the gallery too.
	e.exec(`DELETE FROM gallery_items WHERE gallery_id = $1 AND memory_id = $2`, g, first)
	c.GalleryChanged(g)
	_, body, _ = e.do("GET", "/api/galleries/"+g+"/presence", "", nil)
	if n := len(body["memories"].([]any)); n != 2 {
		t.Fatalf("after the gallery status event the page has %d memories, want 2", n)
	}
	// Unknown galleries are 404 (and not cached).
	if code, body, _ := e.do("GET", "/api/galleries/00000000-0000-4000-8000-000000000000/presence", "", nil); code != 404 || errCode(body) != "not_found" {
		t.Fatalf("unknown gallery: %d %v", code, body)
	}
}

func TestPresenceCache_Memory(t *testing.T) {
	e, c := newCachedEnv(t, presencecache.Config{TTL: time.Minute})
	img := e.image(ptr("https://b.example/x.png"))
	e.edge(img, "image", "metadata", "neon-db", true, "idle")
	code, body, _ := e.do("GET", "/api/memories/image/"+img+"/presence", "", nil)
	if code != 200 || body["source"] != "memory" || body["as_of"] == nil || body["exists"] != true {
		t.Fatalf("%d %v", code, body)
	}
	e.edge(img, "image", "metadata", "icp-canister", true, "idle")
	_, body, _ = e.do("GET", "/api/memories/image/"+img+"/presence", "", nil)
	if body["presence"].(map[string]any)["meta_icp"] != false {
		t.Fatalf("not served from memory: %v", body)
	}
	c.MemoryChanged(img, "image")
	_, body, _ = e.do("GET", "/api/memories/image/"+img+"/presence", "", nil)
	if body["presence"].(map[string]any)["meta_icp"] != true {
		t.Fatalf("after the edge event: %v", body)
	}
	// While the cache does not follow the stream, answers are live.
	c.Following(false)
	_, body, _ = e.do("GET", "/api/memories/image/"+img+"/presence", "", nil)
	if body["source"] != "live" || body["as_of"] != nil {
		t.Fatalf("inactive cache: %v", body)
	}
}

// TestPresenceCache_Bound: many galleries through the API keep the cache
// under its byte bound.
func TestPresenceCache_Bound(t *testing.T) {
	const bound = 256 << 10
	e, c := newCachedEnv(t, presencecache.Config{MaxBytes: bound, TTL: time.Minute})
	e.exec(`INSERT INTO galleries (id, owner_id, title) SELECT md5('g'||j)::uuid, gen_random_uuid(), 'g' FROM generate_series(1, 300) j`)
	e.exec(`INSERT INTO notes (id, owner_id, title, body) SELECT md5('n'||i)::uuid, gen_random_uuid(), 't', 'b' FROM generate_series(1, 3000) i`)
	e.exec(`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present) SELECT md5('n'||i)::uuid, 'note', 'metadata', 'neon-db', true FROM generate_series(1, 3000) i`)
	e.exec(`INSERT INTO gallery_items (gallery_id, memory_id, memory_type, position)
		SELECT md5('g'||j)::uuid, md5('n'||((j * 10 + k) % 3000 + 1))::uuid, 'note', k FROM generate_series(1, 300) j, generate_series(1, 20) k`)
	var ids []string
	rows, err := e.pool.Query(context.Background(), `SELECT id::text FROM galleries ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		_ = rows.Scan(&id)
		ids = append(ids, id)
	}
	if len(ids) != 300 {
		t.Fatalf("%d galleries", len(ids))
	}
	peak := int64(0)
	for _, id := range ids {
		if code, body, _ := e.do("GET", "/api/galleries/"+id+"/presence", "", nil); code != 200 || galleryOf(t, body)["source"] != "memory" {
			t.Fatalf("%s: %d %v", id, code, body)
		}
		peak = max(peak, c.Bytes())
		if c.Bytes() > bound {
			t.Fatalf("the cache holds %d bytes, over its bound %d", c.Bytes(), bound)
		}
	}
	if peak < bound/2 {
		t.Fatalf("the cache never held more than %d bytes: 300 pages of 20 should fill %d", peak, bound)
	}
}

// TestPresenceCache_RaceWithChanges: readers hammer a gallery and a memory
// while a writer flips an edge in Postgres and, after each commit, calls the
// invalidation as the stream feed would. After the last change and its
// invalidation, the answers must show it: no fill read before a change may
// outlive that change's invalidation.
func TestPresenceCache_RaceWithChanges(t *testing.T) {
	e, c := newCachedEnv(t, presencecache.Config{TTL: time.Minute, Settle: time.Millisecond})
	var items [][2]string
	for i := 0; i < 5; i++ {
		n := e.note()
		e.edge(n, "note", "metadata", "neon-db", true, "idle")
		items = append(items, [2]string{n, "note"})
	}
	g := e.gallery(items...)
	target := items[2][0]

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var reads atomic.Int64
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				path := "/api/galleries/" + g + "/presence"
				if w%2 == 1 {
					path = "/api/memories/note/" + target + "/presence"
				}
				resp, err := e.http.Client().Get(e.http.URL + path)
				if err == nil {
					resp.Body.Close()
					reads.Add(1)
				}
			}
		}()
	}
	defer func() { cancel(); wg.Wait() }()
	present := false
	for i := 0; i < 60; i++ {
		present = !present
		e.edge(target, "note", "metadata", "icp-canister", present, "idle")
		c.MemoryChanged(target, "note")
		// Once the invalidation is done, every answer shows the change.
		_, body, _ := e.do("GET", "/api/galleries/"+g+"/presence", "", nil)
		if got := icpOf(t, body, target); got != present {
			t.Fatalf("change %d: the gallery says meta_icp %v, the change set %v (a fill read before it was kept or joined)", i, got, present)
		}
		_, body, _ = e.do("GET", "/api/memories/note/"+target+"/presence", "", nil)
		if got := body["presence"].(map[string]any)["meta_icp"]; got != present {
			t.Fatalf("change %d: the memory says meta_icp %v, the change set %v (a fill read before it was kept or joined)", i, got, present)
		}
	}
	if reads.Load() < 60 {
		t.Fatalf("only %d reads raced the changes", reads.Load())
	}
	t.Logf("%d reads raced 60 changes", reads.Load())
}

// BenchmarkPresenceCache_HitVsHealthz measures the server's own cost of a
// cached first page of 50 against /healthz, in-process through the whole
// middleware (no TCP): go test -run '^$' -bench HitVsHealthz ./internal/api/
func BenchmarkPresenceCache_HitVsHealthz(b *testing.B) {
	pool := pgtest.Pool(b, pgtest.New(b))
	c := presencecache.New(presencecache.Config{TTL: time.Hour}, nil)
	c.Following(true)
	s := New(Config{Tables: defaultTables()}, Deps{Pool: pool, Presence: c})
	ctx := context.Background()
	var g string
	if err := pool.QueryRow(ctx, `INSERT INTO galleries (owner_id, title) VALUES (gen_random_uuid(), 'g') RETURNING id::text`).Scan(&g); err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `WITH n AS (INSERT INTO notes (owner_id, title, body) SELECT gen_random_uuid(), 't', 'b' FROM generate_series(1, 50) RETURNING id)
		INSERT INTO gallery_items (gallery_id, memory_id, memory_type, position) SELECT $1, id, 'note', 1 FROM n`, g); err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	for _, r := range []struct{ name, path string }{
		{"healthz", "/healthz"},
		{"gallery_first_page_hit", "/api/galleries/" + g + "/presence?limit=50"},
	} {
		path := r.path
		b.Run(r.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
				if w.Code != 200 {
					b.Fatalf("%s: %d", path, w.Code)
				}
			}
		})
	}
}
