package migrations_test

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/edgesync/edgesync/internal/pgtest"
	"github.com/edgesync/edgesync/migrations"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func open(t *testing.T, url string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func objects(t *testing.T, db *sql.DB) map[string]bool {
	t.Helper()
	rows, err := db.Query(`
		SELECT 'type:' || typname FROM pg_type WHERE typname IN ('artifact_t','backend_t','memory_type_t','sync_t')
		UNION ALL SELECT 'rel:' || relname FROM pg_class WHERE relnamespace = 'public'::regnamespace
		UNION ALL SELECT 'fn:' || proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
		UNION ALL SELECT 'trigger:' || tgname FROM pg_trigger WHERE NOT tgisinternal`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out[s] = true
	}
	return out
}

func TestUpDownStatus(t *testing.T) {
	ctx := context.Background()
	db := open(t, pgtest.NewEmpty(t))

	rs, err := migrations.Up(ctx, db, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) < 4 {
		t.Fatalf("applied %d migrations, want at least 4", len(rs))
	}
	want := []string{
		"type:artifact_t", "type:backend_t", "type:memory_type_t", "type:sync_t",
		"rel:storage_edges", "rel:storage_edges_key", "rel:ix_edges_memory", "rel:ix_edges_backend_present", "rel:ix_edges_sync_state",
		"rel:memory_presence", "rel:gallery_presence", "rel:sync_status", "rel:gallery_presence_mv", "rel:ux_gallery_presence_mv_gallery",
		"fn:refresh_gallery_presence", "trigger:storage_edges_updated_at",
		"rel:images", "rel:videos", "rel:notes", "rel:documents", "rel:audio", "rel:galleries", "rel:gallery_items",
	}
	got := objects(t, db)
	for _, w := range want {
		if !got[w] {
			t.Errorf("missing %s after up", w)
		}
	}
	var ident string
	if err := db.QueryRow(`SELECT relreplident::text FROM pg_class WHERE relname = 'storage_edges'`).Scan(&ident); err != nil || ident != "i" {
		t.Errorf("storage_edges replica identity = %q (%v), want i (the unique key)", ident, err)
	}

	// Up twice is a no-op.
	rs, err = migrations.Up(ctx, db, true)
	if err != nil || len(rs) != 0 {
		t.Fatalf("second up applied %d, err %v", len(rs), err)
	}
	st, err := migrations.Status(ctx, db, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range st {
		if !m.Applied {
			t.Errorf("%s not applied", m.Name)
		}
	}

	// Down without --app-schema refuses to cross an app schema step, but
	// core steps above it roll back fine.
	for {
		r, err := migrations.Down(ctx, db, false)
		if err != nil {
			break
		}
		if r.Version == 0 {
			t.Fatal("empty result")
		}
	}
	// Down with --app-schema walks to zero; every step has a working down.
	n := 0
	for {
		_, err := migrations.Down(ctx, db, true)
		if err == migrations.ErrNothingToRollBack {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if n++; n > 50 {
			t.Fatal("down never ends")
		}
	}
	got = objects(t, db)
	for _, w := range want {
		if got[w] {
			t.Errorf("%s still exists after rolling everything back", w)
		}
	}
	// And up again works after a full rollback.
	if _, err := migrations.Up(ctx, db, true); err != nil {
		t.Fatal(err)
	}
}

func TestUp_WithoutAppSchemaUsesExistingAppTables(t *testing.T) {
	ctx := context.Background()
	db := open(t, pgtest.NewEmpty(t))
	// Without app tables, the gallery views cannot be created: a clear error.
	_, err := migrations.Up(ctx, db, false)
	if err == nil {
		t.Fatal("up without galleries table succeeded")
	}
	if _, err := db.Exec(`
		CREATE TABLE galleries (id uuid PRIMARY KEY, owner_id uuid, title text);
		CREATE TABLE gallery_items (gallery_id uuid, memory_id uuid, memory_type memory_type_t, position int);`); err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.Up(ctx, db, false); err != nil {
		t.Fatalf("up with the app's own tables: %v", err)
	}
	st, err := migrations.Status(ctx, db, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range st {
		if m.AppSchema {
			t.Errorf("status without --app-schema lists %s", m.Name)
		}
		if !m.Applied {
			t.Errorf("%s pending", m.Name)
		}
	}
}

func TestUp_ConcurrentRunnersDoNotRace(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewEmpty(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := sql.Open("pgx", url)
			if err != nil {
				errs[i] = err
				return
			}
			defer db.Close()
			_, errs[i] = migrations.Up(ctx, db, true)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("runner %d: %v", i, err)
		}
	}
}

// TestViews_Semantics checks the presence views on known data.
func TestViews_Semantics(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	const (
		noteWeb2     = "00000000-0000-0000-0000-000000000001"
		noteICP      = "00000000-0000-0000-0000-000000000002"
		imgBoth      = "00000000-0000-0000-0000-000000000003"
		imgMetaICP   = "00000000-0000-0000-0000-000000000004"
		imgWeb2      = "00000000-0000-0000-0000-000000000005"
		imgCleared   = "00000000-0000-0000-0000-000000000006"
		imgMigrating = "00000000-0000-0000-0000-000000000007"
		gEmpty       = "10000000-0000-0000-0000-000000000001"
		gForever     = "10000000-0000-0000-0000-000000000002"
		gPartial     = "10000000-0000-0000-0000-000000000003"
		gWeb2        = "10000000-0000-0000-0000-000000000004"
	)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	edge := func(id, typ, artifact, backend string, present bool) {
		exec(`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present) VALUES ($1,$2,$3,$4,$5)`, id, typ, artifact, backend, present)
	}
	edge(noteWeb2, "note", "metadata", "neon-db", true)
	edge(noteICP, "note", "metadata", "neon-db", true)
	edge(noteICP, "note", "metadata", "icp-canister", true) // a note is complete with metadata on ICP alone
	edge(imgBoth, "image", "metadata", "neon-db", true)
	edge(imgBoth, "image", "asset", "vercel-blob", true)
	edge(imgBoth, "image", "metadata", "icp-canister", true)
	edge(imgBoth, "image", "asset", "icp-canister", true)
	edge(imgMetaICP, "image", "metadata", "neon-db", true)
	edge(imgMetaICP, "image", "asset", "vercel-blob", true)
	edge(imgMetaICP, "image", "metadata", "icp-canister", true) // asset type needs both
	edge(imgWeb2, "image", "metadata", "neon-db", true)
	edge(imgWeb2, "image", "asset", "vercel-blob", true)
	// URL cleared before it reached ICP: the not-present blob edge is no
	// asset, so metadata on ICP completes it.
	edge(imgCleared, "image", "metadata", "neon-db", true)
	edge(imgCleared, "image", "asset", "vercel-blob", false)
	edge(imgCleared, "image", "metadata", "icp-canister", true)
	// An asset being mirrored counts even while the blob edge is gone.
	edge(imgMigrating, "image", "metadata", "icp-canister", true)
	edge(imgMigrating, "image", "asset", "icp-canister", false)

	type mp struct{ metaNeon, assetBlob, metaICP, assetICP, complete bool }
	wantMem := map[string]mp{
		noteWeb2:     {true, false, false, false, false},
		noteICP:      {true, false, true, false, true},
		imgBoth:      {true, true, true, true, true},
		imgMetaICP:   {true, true, true, false, false},
		imgWeb2:      {true, true, false, false, false},
		imgCleared:   {true, false, true, false, true},
		imgMigrating: {false, false, true, false, false},
	}
	for id, w := range wantMem {
		var g mp
		if err := conn.QueryRow(ctx, `SELECT meta_neon, asset_blob, meta_icp, asset_icp, icp_complete FROM memory_presence WHERE memory_id = $1`, id).
			Scan(&g.metaNeon, &g.assetBlob, &g.metaICP, &g.assetICP, &g.complete); err != nil {
			t.Fatalf("memory_presence %s: %v", id, err)
		}
		if g != w {
			t.Errorf("memory_presence %s = %+v, want %+v", id, g, w)
		}
	}

	owner := "20000000-0000-0000-0000-000000000000"
	for _, g := range []string{gEmpty, gForever, gPartial, gWeb2} {
		exec(`INSERT INTO galleries (id, owner_id) VALUES ($1, $2)`, g, owner)
	}
	item := func(g, m, typ string) {
		exec(`INSERT INTO gallery_items (gallery_id, memory_id, memory_type) VALUES ($1,$2,$3)`, g, m, typ)
	}
	item(gForever, noteICP, "note")
	item(gForever, imgBoth, "image")
	item(gPartial, imgBoth, "image")
	item(gPartial, imgMetaICP, "image")
	item(gWeb2, imgWeb2, "image")
	item(gWeb2, noteWeb2, "note")

	type gp struct {
		total, complete int
		all, any        bool
		status          string
	}
	want := map[string]gp{
		gEmpty:   {0, 0, false, false, "empty"},
		gForever: {2, 2, true, true, "stored_forever"},
		gPartial: {2, 1, false, true, "partial"},
		gWeb2:    {2, 0, false, false, "web2_only"},
	}
	check := func(rel string) {
		t.Helper()
		for id, w := range want {
			var g gp
			if err := conn.QueryRow(ctx, `SELECT total_memories, icp_complete_memories, icp_complete, icp_any, status FROM `+rel+` WHERE gallery_id = $1`, id).
				Scan(&g.total, &g.complete, &g.all, &g.any, &g.status); err != nil {
				t.Fatalf("%s %s: %v", rel, id, err)
			}
			if g != w {
				t.Errorf("%s %s = %+v, want %+v", rel, id, g, w)
			}
		}
	}
	check("gallery_presence")
	exec(`SELECT refresh_gallery_presence()`)
	check("gallery_presence_mv")

	// sync_status lists non-idle edges only; updated_at follows updates.
	var before, after string
	if err := conn.QueryRow(ctx, `SELECT updated_at::text FROM storage_edges WHERE memory_id = $1 AND backend = 'neon-db'`, imgWeb2).Scan(&before); err != nil {
		t.Fatal(err)
	}
	exec(`UPDATE storage_edges SET sync_state = 'migrating' WHERE memory_id = $1 AND backend = 'neon-db'`, imgWeb2)
	if err := conn.QueryRow(ctx, `SELECT updated_at::text FROM storage_edges WHERE memory_id = $1 AND backend = 'neon-db'`, imgWeb2).Scan(&after); err != nil {
		t.Fatal(err)
	}
	if before == after {
		t.Error("updated_at trigger did not move updated_at")
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM sync_status WHERE sync_state = 'migrating' AND in_state_for >= interval '0'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("sync_status rows = %d (%v), want 1", n, err)
	}
	// The unique key holds.
	if _, err := conn.Exec(ctx, `INSERT INTO storage_edges (memory_id, memory_type, artifact, backend) VALUES ($1,'image','asset','vercel-blob')`, imgWeb2); err == nil {
		t.Error("duplicate edge accepted")
	}
}

// TestViews_OneICPCompleteRule: the icp_complete rule is written only in
// memory_presence; gallery_presence builds on it and still reads each item's
// edges through ix_edges_memory with the item's keys (the conditions are
// pushed into memory_presence), never by aggregating every memory's edges.
func TestViews_OneICPCompleteRule(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var def string
	if err := conn.QueryRow(ctx, `SELECT pg_get_viewdef('gallery_presence'::regclass)`).Scan(&def); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(def, "memory_presence") || strings.Contains(def, "storage_edges") {
		t.Errorf("gallery_presence does not build on memory_presence alone:\n%s", def)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	// The tables are tiny here; without this the planner would rightly prefer
	// a sequential scan and the test would say nothing about pushdown.
	if _, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off`); err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(ctx, `EXPLAIN SELECT * FROM gallery_presence WHERE gallery_id = '10000000-0000-0000-0000-000000000001'`)
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, l)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	// The edges are looked up per item (an index condition on the item's
	// keys), not aggregated for every memory and joined afterwards.
	perItem := false
	for i, l := range plan {
		if strings.Contains(l, "ix_edges_memory") && i+1 < len(plan) &&
			strings.Contains(plan[i+1], "Index Cond:") && strings.Contains(plan[i+1], "gi.memory_id") {
			perItem = true
		}
	}
	if p := strings.Join(plan, "\n"); !perItem || strings.Contains(p, "Seq Scan on storage_edges") {
		t.Errorf("gallery_presence does not look edges up per item:\n%s", p)
	}
}
