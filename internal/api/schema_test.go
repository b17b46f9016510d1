package api

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/reconcile"
)

// TestServer_AppSchema runs the API and a real reconcile over memory tables
// in schema app (EDGESYNC_TABLES=app.images,...), with the reference
// schema's public.images holding a decoy row: every read and write must find
// the app's tables, never public's namesakes.
func TestServer_AppSchema(t *testing.T) {
	tables := []domain.Table{
		{Name: "app.images", MemoryType: domain.MemoryImage, URLColumn: "blob_url", SizeColumn: "size_bytes"},
		{Name: "app.notes", MemoryType: domain.MemoryNote},
	}
	var rec *reconcile.Service
	e := newEnv(t, func(c *Config, d *Deps) {
		c.Tables = tables
		rec = reconcile.New(reconcile.Config{Tables: tables, ChunkSize: 2}, d.Pool, nil, prometheus.NewRegistry())
		d.Reconciler = rec
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = rec.Wait(ctx)
	})
	e.exec(`CREATE SCHEMA app`)
	e.exec(`CREATE TABLE app.images (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), owner_id uuid NOT NULL, blob_url text, size_bytes bigint)`)
	e.exec(`CREATE TABLE app.notes (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), owner_id uuid NOT NULL, body text)`)
	row := func(q string, args ...any) string {
		t.Helper()
		var id string
		if err := e.pool.QueryRow(context.Background(), q, args...).Scan(&id); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return id
	}
	img := row(`INSERT INTO app.images (owner_id, blob_url, size_bytes) VALUES (gen_random_uuid(), 'https://b.example/a.png', 7) RETURNING id::text`)
	drifty := row(`INSERT INTO app.images (owner_id, blob_url, size_bytes) VALUES (gen_random_uuid(), 'https://b.example/old.png', 1) RETURNING id::text`)
	note := row(`INSERT INTO app.notes (owner_id, body) VALUES (gen_random_uuid(), 'b') RETURNING id::text`)
	decoy := e.image(ptr("https://b.example/decoy.png")) // public.images: not a memory here

	reconcileOnce := func() reconcile.Report {
		t.Helper()
		code, body, _ := e.do("POST", "/admin/reconcile", testToken, nil)
		if code != 202 {
			t.Fatalf("POST /admin/reconcile = %d %v", code, body)
		}
		id, _ := body["run_id"].(string)
		var run reconcile.Run
		eventually(t, 30*time.Second, "the reconcile run to finish", func() bool {
			r, err := rec.Get(context.Background(), id)
			run = r
			return err == nil && r.State != "running"
		})
		if run.State != "done" || run.Report == nil {
			t.Fatalf("run %+v", run)
		}
		return *run.Report
	}
	edges := func(id string) map[string]string {
		t.Helper()
		rows, err := e.pool.Query(context.Background(), `SELECT artifact::text || '/' || backend::text, coalesce(location, '') || '|' || present::text
			FROM storage_edges WHERE memory_id = $1`, id)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]string{}
		for rows.Next() {
			var k, v string
			if err := rows.Scan(&k, &v); err != nil {
				t.Fatal(err)
			}
			out[k] = v
		}
		return out
	}

	// Reconcile creates the missing edges of the app's rows, none for the decoy.
	rep := reconcileOnce()
	if rep.Missing != 5 { // img: 2, drifty: 2, note: 1
		t.Errorf("missing = %d, want 5 (%+v)", rep.Missing, rep)
	}
	if got := edges(img); got["metadata/neon-db"] != "|true" || got["asset/vercel-blob"] != "https://b.example/a.png|true" {
		t.Errorf("edges of the app image: %v", got)
	}
	if got := edges(note); got["metadata/neon-db"] != "|true" || len(got) != 1 {
		t.Errorf("edges of the app note: %v", got)
	}
	if got := edges(decoy); len(got) != 0 {
		t.Errorf("the public.images decoy got edges: %v", got)
	}

	// The run history lists the real runs, newest first, with their reports.
	firstRun := func() string {
		code, body, _ := e.do("GET", "/api/reconcile/runs?limit=5", "", nil)
		runs, _ := body["runs"].([]any)
		if code != 200 || len(runs) != 1 {
			t.Fatalf("GET /api/reconcile/runs = %d %v, want one run", code, body)
		}
		r := runs[0].(map[string]any)
		if r["state"] != "done" || r["trigger"] != "http" || r["report"].(map[string]any)["missing"] != float64(5) {
			t.Fatalf("listed run %v", r)
		}
		return r["run_id"].(string)
	}()

	// Drift in the app table is found and corrected.
	e.exec(`UPDATE app.images SET blob_url = 'https://b.example/new.png' WHERE id = $1`, drifty)
	if rep := reconcileOnce(); rep.Drift != 1 {
		t.Errorf("drift = %d, want 1 (%+v)", rep.Drift, rep)
	}
	if got := edges(drifty)["asset/vercel-blob"]; got != "https://b.example/new.png|true" {
		t.Errorf("drifted blob edge = %q", got)
	}
	if code, body, _ := e.do("GET", "/api/reconcile/runs?limit=1", "", nil); code != 200 || len(body["runs"].([]any)) != 1 ||
		body["runs"].([]any)[0].(map[string]any)["run_id"] == firstRun {
		t.Errorf("limit 1 after a second run = %d %v, want only the newest", code, body)
	}

	// The API reads the app's tables.
	if code, body, _ := e.do("GET", "/api/memories/image/"+img+"/presence", "", nil); code != 200 || body["exists"] != true {
		t.Errorf("presence of the app image = %d %v", code, body)
	}
	if code, body, _ := e.do("GET", "/api/memories/image/"+decoy+"/presence", "", nil); code != 404 {
		t.Errorf("presence of the decoy = %d %v, want 404", code, body)
	}
	put := func(id string) int {
		code, _, _ := e.do("PUT", "/api/storage/edges", testToken, map[string]any{
			"memory_id": id, "memory_type": "image", "artifact": "metadata", "backend": "neon-db", "present": true,
		})
		return code
	}
	if code := put(img); code != 200 {
		t.Errorf("PUT edge of the app image = %d, want 200", code)
	}
	if code := put(decoy); code != 404 {
		t.Errorf("PUT edge of the decoy = %d, want 404", code)
	}
	g := e.gallery([2]string{img, "image"}, [2]string{note, "note"})
	code, body, _ := e.do("POST", "/api/galleries/"+g+"/store-forever", testToken, nil)
	if code != 202 {
		t.Fatalf("store forever of the gallery = %d %v", code, body)
	}
	if got := edges(img); got["metadata/icp-canister"] != "|false" || got["asset/icp-canister"] != "|false" {
		t.Errorf("the app image's ICP edges after store forever: %v", got)
	}
	if got := edges(note); got["metadata/icp-canister"] != "|false" || got["asset/icp-canister"] != "" {
		t.Errorf("the app note's ICP edges after store forever: %v", got)
	}
	if code, body, _ := e.do("GET", "/api/galleries/"+g+"/presence", "", nil); code != 200 || len(body["memories"].([]any)) != 2 {
		t.Errorf("gallery presence = %d %v", code, body)
	}

	// A row deleted from the app table leaves orphans that reconcile removes
	// (its ICP edges stay: the default policy keeps them).
	e.exec(`DELETE FROM app.images WHERE id = $1`, img)
	if rep := reconcileOnce(); rep.Orphans != 2 {
		t.Errorf("orphans = %d, want 2 (%+v)", rep.Orphans, rep)
	}
	if got := edges(img); got["metadata/neon-db"] != "" || got["asset/vercel-blob"] != "" || got["metadata/icp-canister"] == "" {
		t.Errorf("edges of the deleted app image: %v", got)
	}
}
