package api

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
)

func TestPutEdge_UpsertReturnsStoredEdge(t *testing.T) {
	e := newEnv(t, nil)
	img := e.image(nil)
	body := map[string]any{"memory_id": img, "memory_type": "image", "artifact": "metadata", "backend": "icp-canister",
		"present": false, "sync_state": "migrating"}
	status, first, _ := e.do("PUT", "/api/storage/edges", testToken, body)
	if status != 200 || first["sync_state"] != "migrating" || first["present"] != false {
		t.Fatalf("first put: %d %v", status, first)
	}
	body["present"], body["sync_state"] = true, "idle"
	body["content_hash"] = "sha256:" + strings.Repeat("0F", 32)
	body["size_bytes"], body["last_synced_at"] = 42, "2024-05-01T12:00:00+02:00"
	status, second, _ := e.do("PUT", "/api/storage/edges", testToken, body)
	if status != 200 {
		t.Fatalf("second put: %d %v", status, second)
	}
	if second["id"] != first["id"] {
		t.Fatalf("upsert made a new edge: %v then %v", first["id"], second["id"])
	}
	if second["content_hash"] != strings.Repeat("0f", 32) || second["size_bytes"] != float64(42) || second["present"] != true {
		t.Fatalf("stored edge %v", second)
	}
	if second["last_synced_at"] != "2024-05-01T10:00:00Z" {
		t.Fatalf("last_synced_at %v", second["last_synced_at"])
	}
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM storage_edges WHERE memory_id = $1`, img).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d edges (%v)", n, err)
	}
}

func TestMemoryPresence(t *testing.T) {
	e := newEnv(t, nil)
	img := e.image(ptr("https://blob.example/x.png"))
	e.edge(img, "image", "metadata", "neon-db", true, "idle")
	e.edge(img, "image", "asset", "vercel-blob", true, "idle")
	e.edge(img, "image", "metadata", "icp-canister", true, "idle")
	e.edge(img, "image", "asset", "icp-canister", false, "migrating")
	status, body, _ := e.do("GET", "/api/memories/image/"+img+"/presence", "", nil)
	if status != 200 {
		t.Fatalf("%d %v", status, body)
	}
	p := body["presence"].(map[string]any)
	if p["meta_neon"] != true || p["asset_blob"] != true || p["meta_icp"] != true || p["asset_icp"] != false || p["icp_complete"] != false {
		t.Fatalf("presence %v", p)
	}
	if n := len(body["edges"].([]any)); n != 4 || body["exists"] != true {
		t.Fatalf("%d edges, exists %v", n, body["exists"])
	}
	// Same as the memory_presence view.
	var complete bool
	if err := e.pool.QueryRow(context.Background(), `SELECT icp_complete FROM memory_presence WHERE memory_id = $1`, img).Scan(&complete); err != nil || complete {
		t.Fatalf("view icp_complete %v (%v)", complete, err)
	}
	// A deleted memory that still has (ICP) edges is found; exists is false.
	e.exec(`DELETE FROM images WHERE id = $1`, img)
	status, body, _ = e.do("GET", "/api/memories/image/"+img+"/presence", "", nil)
	if status != 200 || body["exists"] != false {
		t.Fatalf("deleted memory with edges: %d %v", status, body)
	}
}

func TestGalleryPresence_PagesAndSources(t *testing.T) {
	e := newEnv(t, nil)
	var items [][2]string
	for i := 0; i < 23; i++ {
		n := e.note()
		e.edge(n, "note", "metadata", "neon-db", true, "idle")
		if i < 5 {
			e.edge(n, "note", "metadata", "icp-canister", true, "idle")
		}
		items = append(items, [2]string{n, "note"})
	}
	g := e.gallery(items...)
	seen := map[string]bool{}
	cursor := ""
	var sources []string
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("pagination does not end")
		}
		path := "/api/galleries/" + g + "/presence?limit=5"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		status, body, _ := e.do("GET", path, "", nil)
		if status != 200 {
			t.Fatalf("%d %v", status, body)
		}
		gal := body["gallery"].(map[string]any)
		sources = append(sources, gal["source"].(string))
		if gal["status"] != "partial" || gal["total_memories"] != float64(23) || gal["icp_complete_memories"] != float64(5) {
			t.Fatalf("gallery %v", gal)
		}
		for _, m := range body["memories"].([]any) {
			id := m.(map[string]any)["memory_id"].(string)
			if seen[id] {
				t.Fatalf("memory %s on two pages", id)
			}
			seen[id] = true
		}
		next, _ := body["next_cursor"].(string)
		if next == "" {
			break
		}
		cursor = next
	}
	if len(seen) != 23 {
		t.Fatalf("saw %d of 23 memories", len(seen))
	}
	if sources[0] != "live" {
		t.Fatalf("gallery not in the MV yet, source %q", sources[0])
	}
	// After a refresh the MV answers, and says as of when.
	e.exec(`SELECT refresh_gallery_presence()`)
	e.exec(`INSERT INTO edgesync_mv_refresh VALUES ('gallery_presence_mv', now(), 1)`)
	_, body, _ := e.do("GET", "/api/galleries/"+g+"/presence", "", nil)
	if gal := body["gallery"].(map[string]any); gal["source"] != "mv" || gal["as_of"] == nil {
		t.Fatalf("after refresh: %v", gal)
	}
	// ?fresh=true always computes live.
	_, body, _ = e.do("GET", "/api/galleries/"+g+"/presence?fresh=true", "", nil)
	if gal := body["gallery"].(map[string]any); gal["source"] != "live" {
		t.Fatalf("fresh: %v", gal)
	}
	// A deleted gallery is 404 even while the MV still has it.
	e.exec(`DELETE FROM galleries WHERE id = $1`, g)
	if status, body, _ := e.do("GET", "/api/galleries/"+g+"/presence", "", nil); status != 404 {
		t.Fatalf("deleted gallery: %d %v", status, body)
	}
}

func TestSyncStatus_WalkUnderConcurrentInserts(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	// 600 non-idle edges and some idle ones (never listed).
	e.exec(`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, sync_state, sync_error)
		SELECT gen_random_uuid(), 'image', 'asset', 'icp-canister', false,
		       (CASE WHEN i % 3 = 0 THEN 'failed' ELSE 'migrating' END)::sync_t,
		       CASE WHEN i % 3 = 0 THEN 'boom' END
		FROM generate_series(1, 600) i`)
	e.exec(`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present)
		SELECT gen_random_uuid(), 'note', 'metadata', 'neon-db', true FROM generate_series(1, 200)`)
	before := map[string]bool{}
	rows, err := e.pool.Query(ctx, `SELECT id::text FROM storage_edges WHERE sync_state <> 'idle'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		_ = rows.Scan(&id)
		before[id] = true
	}
	rows.Close()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Bounded: an unbounded writer can outrun a slow walk (-race, a busy
		// machine), and a walk over a table that grows without end never ends.
		for i := 0; i < 200; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Random ids land before and after the cursor alike.
			if _, err := e.pool.Exec(ctx, `INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, sync_state)
				SELECT gen_random_uuid(), 'video', 'asset', 'icp-canister', 'migrating' FROM generate_series(1, 5)`); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	seen := map[string]bool{}
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 500 {
			t.Fatal("walk does not end")
		}
		path := "/api/storage/sync-status?limit=37"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		status, body, _ := e.do("GET", path, "", nil)
		if status != 200 {
			t.Fatalf("%d %v", status, body)
		}
		for _, it := range body["items"].([]any) {
			id := it.(map[string]any)["id"].(string)
			if seen[id] {
				t.Fatalf("edge %s returned twice", id)
			}
			seen[id] = true
		}
		counts := body["counts"].(map[string]any)
		if counts["failed"] != float64(200) {
			t.Fatalf("counts %v", counts)
		}
		next, _ := body["next_cursor"].(string)
		if next == "" {
			break
		}
		cursor = next
	}
	close(stop)
	wg.Wait()
	for id := range before {
		if !seen[id] {
			t.Fatalf("pre-existing edge %s skipped", id)
		}
	}

	// Filters.
	status, body, _ := e.do("GET", "/api/storage/sync-status?state=failed&backend=icp-canister&memory_type=image&limit=500", "", nil)
	if status != 200 || len(body["items"].([]any)) != 200 {
		t.Fatalf("filtered: %d, %d items", status, len(body["items"].([]any)))
	}
	for _, it := range body["items"].([]any) {
		m := it.(map[string]any)
		if m["sync_state"] != "failed" || m["memory_type"] != "image" || m["sync_error"] != "boom" || m["attempts"] != float64(0) {
			t.Fatalf("filtered item %v", m)
		}
	}

	// Attempts come from the mirror's bookkeeping of that memory and backend.
	first := body["items"].([]any)[0].(map[string]any)
	e.exec(`INSERT INTO sync_attempts (memory_id, memory_type, backend, attempts, last_error) VALUES ($1, 'image', 'icp-canister', 3, 'boom')`, first["memory_id"])
	status, body, _ = e.do("GET", "/api/storage/sync-status?state=failed&backend=icp-canister&memory_type=image&limit=1", "", nil)
	if status != 200 || len(body["items"].([]any)) != 1 {
		t.Fatalf("first failed item: %d %v", status, body)
	}
	if got := body["items"].([]any)[0].(map[string]any); got["id"] != first["id"] || got["attempts"] != float64(3) {
		t.Fatalf("after 3 attempts: %v, want %s with attempts 3", got, first["id"])
	}
}

func TestStoreForever_TwiceQueuesNothingNew(t *testing.T) {
	e := newEnv(t, nil)
	withAsset := e.image(ptr("https://blob.example/a.jpg"))
	noAsset := e.image(nil)
	note := e.note()
	stored := e.note()
	e.edge(stored, "note", "metadata", "icp-canister", true, "idle")
	g := e.gallery([2]string{withAsset, "image"}, [2]string{noAsset, "image"}, [2]string{note, "note"}, [2]string{stored, "note"},
		[2]string{uuid.NewString(), "image"}) // an item whose memory row is gone
	status, body, _ := e.do("POST", "/api/galleries/"+g+"/store-forever", testToken, nil)
	if status != 202 {
		t.Fatalf("%d %v", status, body)
	}
	got := map[string]string{}
	for _, q := range body["queued"].([]any) {
		m := q.(map[string]any)
		got[m["memory_id"].(string)] = fmt.Sprint(m["artifacts"])
	}
	want := map[string]string{withAsset: "[asset metadata]", noAsset: "[metadata]", note: "[metadata]"}
	if fmt.Sprint(got) != fmt.Sprint(want) || body["already"] != float64(1) {
		t.Fatalf("queued %v already %v; want %v already 1", got, body["already"], want)
	}
	var migrating int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM storage_edges
		WHERE backend = 'icp-canister' AND sync_state = 'migrating' AND NOT present`).Scan(&migrating); err != nil || migrating != 4 {
		t.Fatalf("%d migrating edges (%v)", migrating, err)
	}
	// Again: nothing new.
	status, body, _ = e.do("POST", "/api/galleries/"+g+"/store-forever", testToken, nil)
	if status != 202 || len(body["queued"].([]any)) != 0 || body["already"] != float64(4) {
		t.Fatalf("repeat: %d %v", status, body)
	}
	status, body, _ = e.do("POST", "/api/memories/image/"+withAsset+"/store-forever", testToken, nil)
	if status != 202 || len(body["queued"].([]any)) != 0 || body["already"] != float64(1) {
		t.Fatalf("repeat memory: %d %v", status, body)
	}
	// A failed sync is queued again, with its retry rounds started afresh.
	e.exec(`UPDATE storage_edges SET sync_state = 'failed', sync_error = 'x' WHERE memory_id = $1 AND artifact = 'asset' AND backend = 'icp-canister'`, withAsset)
	e.exec(`INSERT INTO sync_attempts (memory_id, memory_type, backend, attempts, rounds) VALUES ($1, 'image', 'icp-canister', 5, 10)`, withAsset)
	status, body, _ = e.do("POST", "/api/memories/image/"+withAsset+"/store-forever", testToken, nil)
	if status != 202 || fmt.Sprint(body["queued"]) != fmt.Sprintf("[map[artifacts:[asset] memory_id:%s memory_type:image]]", withAsset) {
		t.Fatalf("failed edge: %d %v", status, body)
	}
	var left int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM sync_attempts WHERE memory_id = $1`, withAsset).Scan(&left); err != nil || left != 0 {
		t.Fatalf("sync_attempts rows after a new request: %d (%v); want 0", left, err)
	}
}

// TestStoreForever_MirrorOff: without the ICP mirror both store-forever routes answer 503 with
// an error naming EDGESYNC_ICP_URL, and queue nothing.
func TestStoreForever_MirrorOff(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *Deps) { c.ICPMirror = false })
	img := e.image(ptr("https://blob.example/a.jpg"))
	g := e.gallery([2]string{img, "image"})
	for _, path := range []string{"/api/galleries/" + g + "/store-forever", "/api/memories/image/" + img + "/store-forever"} {
		status, body, _ := e.do("POST", path, testToken, nil)
		errBody, _ := body["error"].(map[string]any)
		if status != 503 || errBody["code"] != "unavailable" || !strings.Contains(fmt.Sprint(errBody["message"]), "EDGESYNC_ICP_URL") {
			t.Errorf("POST %s = %d %v; want 503 naming EDGESYNC_ICP_URL", path, status, body)
		}
		// The token is still checked first.
		if status, _, _ := e.do("POST", path, "", nil); status != 401 {
			t.Errorf("POST %s without a token = %d; want 401", path, status)
		}
	}
	var icpEdges int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM storage_edges WHERE backend = 'icp-canister'`).Scan(&icpEdges); err != nil || icpEdges != 0 {
		t.Errorf("%d icp edges after refused requests (%v); want none", icpEdges, err)
	}
}
