package api

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/edgesync/edgesync/internal/gallerystatus"
)

// startTracker runs the gallery status tracker over the test's database, as
// the daemon's leader does, and rechecks every gallery once.
func startTracker(t *testing.T, e *env) *gallerystatus.Tracker {
	t.Helper()
	tr := gallerystatus.New(gallerystatus.Config{Debounce: 5 * time.Millisecond, MVRefreshEvery: time.Hour, AdoptEvery: 20 * time.Millisecond},
		e.pool, func(context.Context, string, string, []byte) error { return nil }, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("tracker: %v", err)
		}
	})
	tr.RecheckAll()
	return tr
}

// titled inserts a gallery with a title and created_at and returns its id.
func (e *env) titled(title string, created time.Time, items ...[2]string) string {
	e.t.Helper()
	var id string
	if err := e.pool.QueryRow(context.Background(),
		`INSERT INTO galleries (owner_id, title, created_at) VALUES (gen_random_uuid(), $1, $2) RETURNING id::text`, title, created).Scan(&id); err != nil {
		e.t.Fatal(err)
	}
	for i, it := range items {
		e.exec(`INSERT INTO gallery_items (gallery_id, memory_id, memory_type, position) VALUES ($1, $2, $3, $4)`, id, it[0], it[1], i)
	}
	return id
}

// galleryList walks GET /api/galleries with query from its first page to
// its last and returns the galleries in order; it fails on a repeat.
func galleryList(t *testing.T, e *env, query string) []map[string]any {
	t.Helper()
	return galleryWalk(t, e, query, nil)
}

// galleryWalk is galleryList calling between (if not nil) after each page.
func galleryWalk(t *testing.T, e *env, query string, between func()) []map[string]any {
	t.Helper()
	var out []map[string]any
	seen := map[string]bool{}
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("the walk does not end")
		}
		path := "/api/galleries?" + query
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		status, body, _ := e.do("GET", path, "", nil)
		if status != 200 {
			t.Fatalf("GET %s = %d %v", path, status, body)
		}
		for _, g := range body["galleries"].([]any) {
			m := g.(map[string]any)
			id := m["gallery_id"].(string)
			if seen[id] {
				t.Fatalf("gallery %s returned twice (page %d of %s)", id, pages, query)
			}
			seen[id] = true
			out = append(out, m)
		}
		next, ok := body["next_cursor"].(string)
		if !ok {
			if body["next_cursor"] != nil {
				t.Fatalf("next_cursor %v", body["next_cursor"])
			}
			return out
		}
		cursor = next
		if between != nil {
			between()
		}
	}
}

func ids(gs []map[string]any) []string {
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = g["gallery_id"].(string)
	}
	return out
}

func TestListGalleries_BadParameters(t *testing.T) {
	e := newEnv(t, nil)
	badShape := base64.RawURLEncoding.EncodeToString([]byte(`{"t":"yesterday","i":"x"}`))
	for _, tc := range []struct{ query, names string }{
		{"status=done", "status"},
		{"status=PARTIAL", "status"},
		{"limit=0", "limit"},
		{"limit=201", "limit"},
		{"limit=ten", "limit"},
		{"limit=-1", "limit"},
		{"cursor=%25%25%25", "cursor"},
		{"cursor=" + badShape, "cursor"},
		{"cursor=" + base64.RawURLEncoding.EncodeToString([]byte(`[1,2]`)), "cursor"},
		{"q=" + strings.Repeat("x", 201), "q"},
	} {
		status, body, _ := e.do("GET", "/api/galleries?"+tc.query, "", nil)
		msg, _ := body["error"].(map[string]any)["message"].(string)
		if status != 400 || errCode(body) != "bad_request" || !strings.HasPrefix(msg, tc.names) {
			t.Errorf("?%s = %d %v; want 400 bad_request naming %s", truncate(tc.query, 40), status, body, tc.names)
		}
	}
	// The edges of the ranges are fine.
	for _, q := range []string{"limit=1", "limit=200", "status=stored_forever", "q=" + strings.Repeat("x", 200)} {
		if status, body, _ := e.do("GET", "/api/galleries?"+q, "", nil); status != 200 {
			t.Errorf("?%s = %d %v; want 200", truncate(q, 40), status, body)
		}
	}
}

// TestListGalleries_FiltersAndShape: the status filter and the title search
// (case-insensitive, wildcards literal), newest first, and the item shape the
// console reads.
func TestListGalleries_FiltersAndShape(t *testing.T) {
	e := newEnv(t, nil)
	base := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	web2, icp, both := e.note(), e.note(), e.note()
	e.edge(web2, "note", "metadata", "neon-db", true, "idle")
	e.edge(icp, "note", "metadata", "icp-canister", true, "idle")
	e.edge(both, "note", "metadata", "icp-canister", true, "idle")
	empty := e.titled("Empty Shelf", base)
	summer := e.titled("Summer 50% off_sale", base.Add(time.Minute), [2]string{web2, "note"})
	forever := e.titled("summer forever", base.Add(2*time.Minute), [2]string{icp, "note"}, [2]string{both, "note"})
	partial := e.titled("Winter", base.Add(3*time.Minute), [2]string{web2, "note"}, [2]string{icp, "note"})
	decoy := e.titled("Summer 500 offXsale", base.Add(4*time.Minute))

	// Before the tracker ran: every gallery, counts from the live view.
	all := galleryList(t, e, "limit=2")
	if got, want := fmt.Sprint(ids(all)), fmt.Sprint([]string{decoy, partial, forever, summer, empty}); got != want {
		t.Fatalf("order %s, want newest first %s", got, want)
	}
	p := all[1]
	if p["status"] != "partial" || p["total_memories"] != float64(2) || p["icp_complete_memories"] != float64(1) ||
		p["icp_complete"] != false || p["icp_any"] != true || p["migrating"] != float64(0) || p["failed"] != float64(0) ||
		p["source"] != "live" || p["as_of"] != nil || p["title"] != "Winter" || p["created_at"] != base.Add(3*time.Minute).Format(time.RFC3339) {
		t.Fatalf("item %v", p)
	}
	if _, err := uuid.Parse(p["owner_id"].(string)); err != nil {
		t.Fatalf("owner_id %v", p["owner_id"])
	}

	// A status filter lists what the tracker recorded.
	startTracker(t, e)
	eventually(t, 10*time.Second, "the tracker's rows", func() bool {
		var n int
		_ = e.pool.QueryRow(context.Background(), `SELECT count(*) FROM edgesync_gallery_status`).Scan(&n)
		return n == 5
	})
	for status, want := range map[string][]string{
		"empty": {decoy, empty}, "web2_only": {summer}, "partial": {partial}, "stored_forever": {forever},
	} {
		got := galleryList(t, e, "limit=1&status="+status)
		if fmt.Sprint(ids(got)) != fmt.Sprint(want) {
			t.Errorf("status=%s: %v, want %v", status, ids(got), want)
		}
		for _, g := range got {
			if g["status"] != status || g["source"] != "tracker" || g["as_of"] == nil {
				t.Errorf("status=%s item %v", status, g)
			}
		}
	}
	// Unfiltered, the tracker's rows are preferred now.
	for _, g := range galleryList(t, e, "") {
		if g["source"] != "tracker" {
			t.Errorf("after the tracker ran: %v", g)
		}
	}

	for q, want := range map[string][]string{
		"summer":  {decoy, forever, summer}, // case-insensitive
		"50% off": {summer},                 // % is a character, not a wildcard
		"off_":    {summer},                 // and so is _
		"%":       {summer},
		"nothing": nil,
	} {
		got := galleryList(t, e, "q="+url.QueryEscape(q))
		if fmt.Sprint(ids(got)) != fmt.Sprint(want) {
			t.Errorf("q=%q: %v, want %v", q, ids(got), want)
		}
		got = galleryList(t, e, "status=web2_only&q="+url.QueryEscape(q))
		wantWeb2 := []string{}
		for _, id := range want {
			if id == summer {
				wantWeb2 = append(wantWeb2, id)
			}
		}
		if fmt.Sprint(ids(got)) != fmt.Sprint(wantWeb2) && !(len(got) == 0 && len(wantWeb2) == 0) {
			t.Errorf("status=web2_only&q=%q: %v, want %v", q, ids(got), wantWeb2)
		}
	}
}

// TestListGalleries_WalkUnderConcurrentInserts: a walk returns every gallery
// that existed when it began exactly once, while galleries are inserted
// before and after its cursor; with and without a status filter.
func TestListGalleries_WalkUnderConcurrentInserts(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	// 400 galleries, some sharing a created_at (the id breaks the tie).
	e.exec(`INSERT INTO galleries (owner_id, title, created_at)
		SELECT gen_random_uuid(), 'g' || i, timestamptz '2024-01-01' + (i / 3) * interval '1 hour' FROM generate_series(1, 400) i`)
	startTracker(t, e)
	eventually(t, 10*time.Second, "the tracker's rows", func() bool {
		var n int
		_ = e.pool.QueryRow(ctx, `SELECT count(*) FROM edgesync_gallery_status`).Scan(&n)
		return n == 400
	})
	before := map[string]bool{}
	rows, err := e.pool.Query(ctx, `SELECT id::text FROM galleries`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		_ = rows.Scan(&id)
		before[id] = true
	}
	rows.Close()

	// Between pages, and also while a page is being read, galleries arrive
	// newer than all (already passed), older than all (still ahead) and at
	// random times within the walked range (either side of the cursor).
	insert := func() {
		if _, err := e.pool.Exec(ctx, `INSERT INTO galleries (owner_id, title, created_at)
			VALUES (gen_random_uuid(), 'new', now()), (gen_random_uuid(), 'old', timestamptz '2023-01-01'),
			       (gen_random_uuid(), 'mid', timestamptz '2024-01-01' + random() * interval '140 hours')`); err != nil {
			t.Error(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 50; i++ {
			select {
			case <-stop:
				return
			default:
			}
			insert()
		}
	}()
	walked := map[string][]map[string]any{}
	hooked := 0
	walked["limit=13"] = galleryWalk(t, e, "limit=13", func() { hooked++; insert() }) // fails on a repeat
	walked["limit=7&status=empty"] = galleryWalk(t, e, "limit=7&status=empty", insert)
	close(stop)
	wg.Wait()
	// Each 'old' gallery inserted between pages was still ahead of the
	// cursor: the unfiltered walk reached it.
	old := 0
	for _, g := range walked["limit=13"] {
		if g["title"] == "old" {
			old++
		}
	}
	if old < hooked {
		t.Fatalf("the walk saw %d galleries inserted ahead of its cursor, want at least %d", old, hooked)
	}
	for q, got := range walked {
		seen := map[string]bool{}
		var last time.Time
		for i, g := range got {
			seen[g["gallery_id"].(string)] = true
			at, _ := time.Parse(time.RFC3339Nano, g["created_at"].(string))
			if i > 0 && at.After(last) {
				t.Fatalf("%s: not newest first at %d: %v after %v", q, i, at, last)
			}
			last = at
		}
		for id := range before {
			if !seen[id] {
				t.Fatalf("%s: gallery %s, there all along, was skipped (%d seen)", q, id, len(seen))
			}
		}
	}
}

// TestListGalleries_SyncCountsFollowEdges: migrating and failed count a
// gallery's items with an edge in that state, as the tracker records them,
// and the bulk read answers the same.
func TestListGalleries_SyncCountsFollowEdges(t *testing.T) {
	e := newEnv(t, nil)
	n1, n2, n3 := e.note(), e.note(), e.note()
	for _, n := range []string{n1, n2, n3} {
		e.edge(n, "note", "metadata", "neon-db", true, "idle")
	}
	g := e.gallery([2]string{n1, "note"}, [2]string{n2, "note"}, [2]string{n3, "note"})
	other := e.gallery()
	// Before the tracker: counted live.
	e.edge(n1, "note", "metadata", "icp-canister", false, "migrating")
	item := func() map[string]any {
		t.Helper()
		status, body, _ := e.do("GET", "/api/galleries/presence?ids="+g, "", nil)
		if status != 200 {
			t.Fatalf("%d %v", status, body)
		}
		return body["galleries"].([]any)[0].(map[string]any)
	}
	if it := item(); it["source"] != "live" || it["migrating"] != float64(1) || it["failed"] != float64(0) {
		t.Fatalf("live counts %v", it)
	}
	tr := startTracker(t, e)
	want := func(what string, migrating, failed int, status string) {
		t.Helper()
		var it map[string]any
		eventually(t, 10*time.Second, what, func() bool {
			it = item()
			return it["source"] == "tracker" && it["migrating"] == float64(migrating) && it["failed"] == float64(failed)
		})
		if it["status"] != status {
			t.Fatalf("%s: %v, want status %s", what, it, status)
		}
		for _, l := range galleryList(t, e, "") {
			if l["gallery_id"] == g && (l["migrating"] != float64(migrating) || l["failed"] != float64(failed)) {
				t.Fatalf("%s: the list says %v", what, l)
			}
		}
	}
	want("tracker row", 1, 0, "web2_only")

	notify := func(ns ...string) {
		for _, n := range ns {
			tr.MemoriesChanged(gallerystatus.MemoryKey{ID: n, Type: "note"})
		}
	}
	e.edge(n2, "note", "metadata", "icp-canister", false, "migrating")
	e.edge(n3, "note", "metadata", "icp-canister", false, "failed")
	notify(n2, n3)
	want("two migrating, one failed", 2, 1, "web2_only")

	e.edge(n1, "note", "metadata", "icp-canister", true, "idle")
	e.edge(n2, "note", "metadata", "icp-canister", false, "failed")
	notify(n1, n2)
	want("one stored, two failed", 0, 2, "partial")

	if st, body, _ := e.do("GET", "/api/galleries/presence?ids="+other, "", nil); st != 200 ||
		body["galleries"].([]any)[0].(map[string]any)["migrating"] != float64(0) {
		t.Fatalf("the other gallery: %d %v", st, body)
	}
}

func TestGalleriesPresence_Bulk(t *testing.T) {
	e := newEnv(t, nil)
	n := e.note()
	e.edge(n, "note", "metadata", "icp-canister", true, "idle")
	g1 := e.gallery([2]string{n, "note"})
	g2 := e.gallery()
	gone := uuid.NewString()
	status, body, _ := e.do("GET", "/api/galleries/presence?ids="+strings.Join([]string{g2, gone, g1, g2}, ","), "", nil)
	if status != 200 {
		t.Fatalf("%d %v", status, body)
	}
	gs := body["galleries"].([]any)
	if len(gs) != 2 || gs[0].(map[string]any)["gallery_id"] != g2 || gs[1].(map[string]any)["gallery_id"] != g1 {
		t.Fatalf("galleries %v, want %s then %s (the order asked, once each)", gs, g2, g1)
	}
	if m := gs[1].(map[string]any); m["status"] != "stored_forever" || m["total_memories"] != float64(1) || m["title"] != "g" {
		t.Fatalf("item %v", m)
	}
	if fmt.Sprint(body["missing"]) != "["+gone+"]" {
		t.Fatalf("missing %v, want [%s]", body["missing"], gone)
	}
	// Nothing missing: an empty list, not null.
	if _, body, _ := e.do("GET", "/api/galleries/presence?ids="+g1, "", nil); fmt.Sprint(body["missing"]) != "[]" {
		t.Fatalf("missing %#v", body["missing"])
	}
	// The parameter may also repeat.
	if _, body, _ := e.do("GET", "/api/galleries/presence?ids="+g1+"&ids="+g2, "", nil); len(body["galleries"].([]any)) != 2 {
		t.Fatalf("repeated ids: %v", body)
	}

	many := make([]string, 101)
	for i := range many {
		many[i] = uuid.NewString()
	}
	for _, q := range []string{"", "ids=", "ids=" + g1 + ",", "ids=" + strings.ToUpper(g1), "ids=nope", "ids=" + strings.Join(many, ",")} {
		status, body, _ := e.do("GET", "/api/galleries/presence?"+q, "", nil)
		msg, _ := body["error"].(map[string]any)["message"].(string)
		if status != 400 || errCode(body) != "bad_request" || !strings.HasPrefix(msg, "ids") {
			t.Errorf("?%s = %d %v; want 400 naming ids", truncate(q, 50), status, body)
		}
	}
	if status, _, _ := e.do("GET", "/api/galleries/presence?ids="+strings.Join(many[:100], ","), "", nil); status != 200 {
		t.Errorf("100 ids = %d, want 200", status)
	}
	// The one-gallery route is still there beside it.
	if status, body, _ := e.do("GET", "/api/galleries/"+g1+"/presence", "", nil); status != 200 || body["gallery"].(map[string]any)["gallery_id"] != g1 {
		t.Errorf("GET /api/galleries/{id}/presence = %d %v", status, body)
	}
	if status, body, _ := e.do("GET", "/api/galleries/presence/presence", "", nil); status != 400 {
		t.Errorf("gallery id \"presence\" = %d %v, want 400 (not a UUID)", status, body)
	}
}

// TestListGalleries_AppTableWithoutColumns: an app's own galleries table
// may lack the columns the list reads (edgesync needs only id); the answer
// says which, not an anonymous 500.
func TestListGalleries_AppTableWithoutColumns(t *testing.T) {
	e := newEnv(t, nil)
	g := e.gallery()
	e.exec(`ALTER TABLE galleries DROP COLUMN created_at`)
	for _, path := range []string{"/api/galleries", "/api/galleries/presence?ids=" + g} {
		status, body, _ := e.do("GET", path, "", nil)
		msg, _ := body["error"].(map[string]any)["message"].(string)
		if status != 500 || !strings.Contains(msg, "created_at") || !strings.Contains(msg, "reference app schema") {
			t.Errorf("GET %s = %d %v; want 500 naming the missing column", path, status, body)
		}
	}
}
