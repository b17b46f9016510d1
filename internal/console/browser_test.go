package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/daemon/daemontest"
	"github.com/edgesync/edgesync/internal/icpreplica"
	"github.com/edgesync/edgesync/internal/natstest"
	"github.com/edgesync/edgesync/internal/pgtest"
)

// The browser test drives the console that a real `edgesync run` serves
// (Postgres with wal_level=logical from internal/pgtest, the real NATS server
// in-process) with Debian's chromium through chromedp. `make test` installs
// chromium first (scripts/ensure-chromium.sh); without it the test fails.

func TestMain(m *testing.M) { pgtest.Main(m) }

const token = "console-test-token"

// Galleries of the test data, by title, with the status each must show.
var wantStatus = map[string]string{
	"Summer trip": "stored_forever",
	"Recipes":     "partial",
	"Drafts":      "web2_only",
	"Empty shelf": "empty",
}

// chromiumPath returns the browser to drive, failing the test in one line
// when there is none.
func chromiumPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("EDGESYNC_TEST_CHROMIUM")
	if p == "" {
		p = "/usr/bin/chromium"
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("chromium not found at %s: run scripts/ensure-chromium.sh (make test does) or set EDGESYNC_TEST_CHROMIUM to a Chromium binary", p)
	}
	return p
}

// artifactDir is where the screenshots go: $EDGESYNC_TEST_ARTIFACTS/console,
// else artifacts/console at the repository root (gitignored).
func artifactDir(t *testing.T) string {
	t.Helper()
	base := os.Getenv("EDGESYNC_TEST_ARTIFACTS")
	if base == "" {
		base = filepath.Join("..", "..", "artifacts")
	}
	dir, err := filepath.Abs(filepath.Join(base, "console"))
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		t.Fatalf("screenshot directory: %v (set EDGESYNC_TEST_ARTIFACTS to a writable directory)", err)
	}
	return dir
}

type stack struct {
	base string // http://host:port
	pool *pgxpool.Pool
	ids  map[string]string // gallery title → id
	mem  map[string]string // memory name → id
}

func (s *stack) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := s.pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", strings.Fields(sql)[0], err)
	}
}

// sketchSize is the asset the Store Forever step uploads: large enough for
// several chunks.
const sketchSize = 3_000_000

// blobHost stands in for Vercel Blob: /sketch is an asset of sketchSize
// bytes; /hang never answers (until the request is cancelled), so an upload
// of it stays migrating.
func blobHost(t *testing.T) *httptest.Server {
	t.Helper()
	sketch := make([]byte, sketchSize)
	for i := range sketch {
		sketch[i] = byte(i * 7)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/sketch":
			w.Header().Set("Content-Length", strconv.Itoa(len(sketch)))
			_, _ = w.Write(sketch)
		case "/hang":
			<-r.Context().Done()
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// startStack loads demo-like data and starts the daemon on it, with the ICP
// mirror on (the replica double) and a stand-in blob host.
func startStack(t *testing.T) *stack {
	t.Helper()
	dbURL := pgtest.New(t)
	s := &stack{pool: pgtest.Pool(t, dbURL), ids: map[string]string{}, mem: map[string]string{}}
	blobs := blobHost(t)
	replica := icpreplica.StartTest(t, icpreplica.Config{})
	owner := "b0000000-0000-4000-8000-000000000001"
	for i, title := range []string{"Summer trip", "Recipes", "Drafts", "Empty shelf"} {
		id := fmt.Sprintf("a0000000-0000-4000-8000-%012d", i+1)
		s.ids[title] = id
		s.exec(t, `INSERT INTO galleries (id, owner_id, title) VALUES ($1, $2, $3)`, id, owner, title)
	}
	type memory struct{ name, table, typ, gallery, url string }
	mems := []memory{
		{"beach", "images", "image", "Summer trip", "https://blob.example/beach"},
		{"waves", "videos", "video", "Summer trip", "https://blob.example/waves"},
		{"diary", "notes", "note", "Summer trip", ""},
		{"pancakes", "notes", "note", "Recipes", ""},
		{"tide", "images", "image", "Recipes", blobs.URL + "/hang"},
		{"sketch", "images", "image", "Drafts", blobs.URL + "/sketch"},
	}
	for i, m := range mems {
		id := fmt.Sprintf("c0000000-0000-4000-8000-%012d", i+1)
		s.mem[m.name] = id
		if m.table == "notes" {
			s.exec(t, `INSERT INTO notes (id, owner_id, title, body) VALUES ($1, $2, $3, 'text')`, id, owner, m.name)
		} else {
			s.exec(t, `INSERT INTO `+m.table+` (id, owner_id, title, url, size_bytes) VALUES ($1, $2, $3, $4, $5)`,
				id, owner, m.name, m.url, sketchSize)
		}
		s.exec(t, `INSERT INTO gallery_items (gallery_id, memory_id, memory_type, position) VALUES ($1, $2, $3, $4)`, s.ids[m.gallery], id, m.typ, i)
	}
	// Stored forever: every memory of "Summer trip" and one of "Recipes".
	for _, name := range []string{"beach", "waves", "diary", "pancakes"} {
		s.icpEdge(t, name, "metadata")
	}
	s.icpEdge(t, "beach", "asset")
	s.icpEdge(t, "waves", "asset")

	ns := natstest.Start(t)
	cfg := config.Default()
	cfg.DatabaseURL, cfg.NATSURL, cfg.HTTPAddr, cfg.DataDir = dbURL, ns.URL(), "127.0.0.1:0", t.TempDir()
	cfg.AdminToken = token
	cfg.ICPURL, cfg.ICPCanisterID, cfg.ICPFetchRootKey = replica.URL(), replica.CanisterID().String(), true
	cfg.AssetHosts = blobs.Listener.Addr().String()
	cfg.ReconcileInterval = 0
	cfg.HeartbeatInterval = time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	d := daemontest.Start(t, cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	s.base = "http://" + d.Addr()
	t.Cleanup(func() { // runs before the daemon stops
		if t.Failed() {
			t.Log(s.dump())
		}
	})
	return s
}

// dump is the state a failure message needs: the non-idle edges and the ICP
// mirror's jobs.
func (s *stack) dump() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b strings.Builder
	for _, q := range []string{
		`SELECT memory_id || ' ' || artifact || ' ' || backend || ' ' || sync_state || ' ' || coalesce(sync_error, '') FROM storage_edges WHERE sync_state <> 'idle' ORDER BY 1`,
		`SELECT id || ' ' || state || ' attempt ' || attempt || ' ' || args::text || ' ' || coalesce(errors::text, '') FROM river_job ORDER BY id`,
	} {
		rows, err := s.pool.Query(ctx, q)
		if err != nil {
			fmt.Fprintf(&b, "%v\n", err)
			continue
		}
		for rows.Next() {
			var line string
			_ = rows.Scan(&line)
			b.WriteString(line + "\n")
		}
		rows.Close()
	}
	return b.String()
}

func (s *stack) icpEdge(t *testing.T, name, artifact string) {
	t.Helper()
	s.exec(t, `INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, content_hash, size_bytes, sync_state, last_synced_at)
		SELECT gi.memory_id, gi.memory_type, $2::artifact_t, 'icp-canister', true, repeat('ab', 32), 1000, 'idle', now()
		FROM gallery_items gi WHERE gi.memory_id = $1`, s.mem[name], artifact)
}

// browser is one headless chromium tab with the flags this machine needs
// (no sandbox, GPU or QUIC, and none of the background connections a closed
// network refuses), and the page's console errors collected.
type browser struct {
	ctx  context.Context
	t    *testing.T
	dir  string
	mu   sync.Mutex
	errs []string
}

func newBrowser(t *testing.T, bin string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{ctx: ctx, t: t, dir: artifactDir(t)}
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				b.mu.Lock()
				b.errs = append(b.errs, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
				b.mu.Unlock()
			}
		}
	}()
	return b
}

// do runs actions with a deadline, failing the test with what was doing.
func (b *browser) do(what string, within time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, within)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v\n%s", what, err, b.state())
	}
}

// waitFor waits until the JavaScript predicate holds; no wall-clock
// assertions, only a deadline on a DOM condition.
func (b *browser) waitFor(what, predicate string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 90*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](predicate,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(80*time.Second))); err != nil {
		b.t.Fatalf("waiting for %s: %v\n%s", what, err, b.state())
	}
}

func (b *browser) eval(expr string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// choose sets a form control's value as a person's choice would, with the
// event the page listens for.
func (b *browser) choose(selector, value, event string) {
	b.t.Helper()
	sel, _ := json.Marshal(selector)
	val, _ := json.Marshal(value)
	ev, _ := json.Marshal(event)
	b.eval(`(() => { const el = document.querySelector(` + string(sel) + `); el.value = ` + string(val) +
		`; el.dispatchEvent(new Event(` + string(ev) + `, {bubbles: true})); return "ok"; })()`)
}

// state is what the page shows, for failure messages.
func (b *browser) state() string {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.hash + "\n" + document.querySelector("main").innerText.slice(0, 3000)`))
	if err != nil {
		return "(page state unavailable: " + err.Error() + ")"
	}
	return "page " + v
}

func (b *browser) screenshot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err == nil {
		err = os.WriteFile(filepath.Join(b.dir, name+".png"), png, 0o644)
	}
	if err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	b.t.Logf("screenshot %s", filepath.Join(b.dir, name+".png"))
}

func (b *browser) consoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errs...)
}

// galleriesShown is a predicate over the galleries table: the rows, as
// "title=status", sorted, equal want.
func galleriesShown(want map[string]string) string {
	var rows []string
	for title, status := range want {
		rows = append(rows, title+"="+status)
	}
	sort.Strings(rows)
	w, _ := json.Marshal(rows)
	return `JSON.stringify([...document.querySelectorAll("#galleries tbody tr")].map(r => r.querySelector("th").textContent + "=" + r.dataset.status).sort()) === ` + "'" + string(w) + "'"
}

// TestConsole_InBrowser: the console loads without console errors, follows
// changed rows in the sync queue without a reload, starts a dry-run
// reconcile with the admin token, shows the galleries with their statuses,
// filters them, follows a gallery whose status changes, shows one gallery's
// memories and edges, stores a gallery forever and retries a failed memory.
// Screenshots of the views are saved.
func TestConsole_InBrowser(t *testing.T) {
	bin := chromiumPath(t) // first: without a browser there is nothing to start the rest for
	s := startStack(t)
	b := newBrowser(t, bin)

	b.do("open the console", 60*time.Second, chromedp.Navigate(s.base+"/"))
	// A page-lifetime marker: if the page reloaded, it would be gone.
	b.eval(`window.__consoleTest = "same page"; "ok"`)
	b.waitFor("the overview and the live stream",
		`document.querySelector("main").dataset.view === "overview" && document.querySelector("main").dataset.loaded === "true" && document.body.dataset.live === "open"`)
	b.waitFor("this instance to lead", `!!document.querySelector('#pipeline dd[data-role="leader"]')`)
	b.waitFor("the backend health table", `document.querySelectorAll('tr[data-backend="postgres"], tr[data-backend="nats"]').length === 2`)
	b.screenshot("overview")

	// The sync queue follows rows that change under the open page: an ICP
	// upload of a "Summer trip" memory fails, another memory starts one.
	b.do("open the sync queue", 30*time.Second, chromedp.Click(chromedp.CSS(`nav a[data-view="sync"]`)))
	b.waitFor("the empty sync queue", `document.querySelector("main").dataset.view === "sync" && document.querySelector("main").dataset.loaded === "true" && !!document.querySelector("#sync-results .empty")`)
	s.exec(t, `UPDATE storage_edges SET present = false, sync_state = 'failed', sync_error = 'canister refused: out of cycles'
		WHERE memory_id = $1 AND backend = 'icp-canister' AND artifact = 'metadata'`, s.mem["diary"])
	b.waitFor("the failed edge with its error", `[...document.querySelectorAll('#sync-items tr[data-state="failed"]')].some(r => r.dataset.memoryId === "`+s.mem["diary"]+`" && r.textContent.includes("out of cycles"))`)
	// (The ICP mirror takes the asset up from a blob host that never answers,
	// so it stays migrating.)
	s.exec(t, `INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, sync_state)
		VALUES ($1, 'image', 'asset', 'icp-canister', false, 'migrating')`, s.mem["tide"])
	b.waitFor("the new migrating edge", `[...document.querySelectorAll('#sync-items tr[data-state="migrating"]')].some(r => r.dataset.memoryId === "`+s.mem["tide"]+`") && document.querySelector('#sync-counts [data-count="migrating"]').textContent !== "0"`)
	b.waitFor("the edge changes in the live list", `document.querySelectorAll("#activity li time").length >= 2`)
	b.screenshot("sync-queue")

	// A dry-run reconcile, with the token asked for once.
	b.do("open reconcile", 30*time.Second, chromedp.Click(chromedp.CSS(`nav a[data-view="reconcile"]`)))
	b.waitFor("the run history", `document.querySelector("main").dataset.view === "reconcile" && document.querySelector("main").dataset.loaded === "true"`)
	b.do("start a dry run", 30*time.Second, chromedp.Click(chromedp.CSS("#reconcile-dry")))
	b.waitFor("the token dialog", `document.querySelector("#token-dialog").open`)
	b.do("give the token", 30*time.Second,
		chromedp.SendKeys(chromedp.CSS("#token-input"), token),
		chromedp.Click(chromedp.CSS("#token-ok")))
	b.waitFor("the dry run to finish", `(() => { const id = document.querySelector("#reconcile-started").dataset.runId;
		const r = id && document.querySelector('#runs-table tr[data-run-id="' + id + '"]');
		return !!r && r.dataset.state === "done" && r.textContent.includes("dry run"); })()`)
	if got := b.eval(`sessionStorage.getItem("edgesync.adminToken") || ""`); got != token {
		t.Errorf("the token kept in sessionStorage is %q", got)
	}
	b.screenshot("reconcile")

	// The galleries (GET /api/galleries) with their statuses: "Summer trip"
	// lost a memory from ICP above.
	shown := map[string]string{}
	for k, v := range wantStatus {
		shown[k] = v
	}
	shown["Summer trip"] = "partial"
	b.do("open the galleries", 30*time.Second, chromedp.Click(chromedp.CSS(`nav a[data-view="galleries"]`)))
	b.waitFor("the four galleries with their statuses", galleriesShown(shown)+
		` && document.querySelector('tr[data-gallery-id="`+s.ids["Summer trip"]+`"] td.failed').textContent === "1"`)
	b.screenshot("galleries")

	// Filter by status, then by title.
	b.choose("#gallery-status", "partial", "change")
	b.waitFor("only the partial galleries", galleriesShown(map[string]string{"Recipes": "partial", "Summer trip": "partial"})+` && location.hash.includes("status=partial")`)
	b.screenshot("galleries-partial")
	b.choose("#gallery-status", "", "change")
	b.do("search for trip", 30*time.Second, chromedp.SendKeys(chromedp.CSS("#gallery-q"), "trip"))
	b.waitFor("only the gallery named trip", galleriesShown(map[string]string{"Summer trip": "partial"}))
	b.choose("#gallery-q", "", "input")
	b.waitFor("all galleries again", galleriesShown(shown))

	// A row changes under the open list: the one ICP copy of "Recipes" goes.
	// Its row follows without a reload.
	s.exec(t, `UPDATE storage_edges SET present = false, sync_state = 'failed', sync_error = 'canister refused: out of cycles'
		WHERE memory_id = $1 AND backend = 'icp-canister'`, s.mem["pancakes"])
	shown["Recipes"] = "web2_only"
	shown["Drafts"] = "web2_only"
	b.waitFor("Recipes to turn web2_only with one failed memory", galleriesShown(shown)+
		` && document.querySelector('tr[data-gallery-id="`+s.ids["Recipes"]+`"] td.failed').textContent === "1"`)

	// One gallery's memories and edges.
	b.do("open Summer trip", 30*time.Second, chromedp.Click(chromedp.CSS(`tr[data-gallery-id="`+s.ids["Summer trip"]+`"] th a`)))
	b.waitFor("the gallery's memories", `document.querySelectorAll("#gallery-memories tbody tr[data-memory-id]").length === 3 && document.querySelector("#gallery-facts").dataset.status === "partial"`)
	b.do("open the failed memory's edges", 30*time.Second, chromedp.Click(chromedp.CSS(`tr[data-memory-id="`+s.mem["diary"]+`"] button[aria-expanded]`)))
	b.waitFor("the failed memory's edges", `[...document.querySelectorAll("tr.sub td.err")].some(td => td.textContent.includes("out of cycles"))`)
	b.screenshot("gallery")
	// The gallery's page follows the stream filtered to its memories.
	b.waitFor("the gallery's own stream", `document.body.dataset.live === "open" && document.querySelector("#live").dataset.stream.endsWith("/stream?gallery=`+s.ids["Summer trip"]+`")`)
	s.exec(t, `UPDATE storage_edges SET sync_state = 'migrating' WHERE memory_id = $1 AND backend = 'icp-canister' AND artifact = 'asset'`, s.mem["beach"])
	// (The mirror takes it up and fails it at once: its blob host is not allowed.)
	b.waitFor("the memory's sync changing on the gallery's page", `document.querySelector('tr[data-memory-id="`+s.mem["beach"]+`"]').dataset.sync !== "idle"`)

	// Store Forever of "Drafts" from its page (the token is already kept):
	// the upload's progress reaches the page, the gallery turns stored_forever.
	b.do("back to the galleries", 30*time.Second, chromedp.Click(chromedp.CSS(`nav a[data-view="galleries"]`)))
	b.do("open Drafts", 30*time.Second, chromedp.Click(chromedp.CSS(`tr[data-gallery-id="`+s.ids["Drafts"]+`"] th a`)))
	b.waitFor("the Drafts page", `document.querySelector("#gallery-facts") && document.querySelector("#gallery-facts").dataset.status === "web2_only" && document.querySelector("#live").dataset.stream.endsWith("gallery=`+s.ids["Drafts"]+`") && document.body.dataset.live === "open"`)
	b.do("Store Forever", 30*time.Second, chromedp.Click(chromedp.CSS("#gallery-store-forever")))
	b.waitFor("the request to be queued", `!document.querySelector("#toast").hidden && document.querySelector("#toast").textContent.startsWith("Queued 1 memory")`)
	b.waitFor("Drafts stored forever", `document.querySelector("#gallery-facts").dataset.status === "stored_forever"`)
	b.screenshot("gallery-stored-forever")
	b.do("open the sync queue again", 30*time.Second, chromedp.Click(chromedp.CSS(`nav a[data-view="sync"]`)))
	b.waitFor("the finished upload", `(() => { const p = document.querySelector('#uploads [data-progress-memory="`+s.mem["sketch"]+`"] progress');
		return !!p && p.max === `+strconv.Itoa(sketchSize)+` && p.value === p.max; })()`)
	b.screenshot("sync-queue-uploads")
	// Retry of a failed memory is Store Forever of that memory: the note
	// goes up this time and leaves the queue.
	b.do("retry the failed note", 30*time.Second, chromedp.Click(chromedp.CSS(`#sync-items tr[data-memory-id="`+s.mem["diary"]+`"] button.retry`)))
	b.waitFor("the note to leave the queue", `!document.querySelector('#sync-items tr[data-memory-id="`+s.mem["diary"]+`"]')`)
	// Every memory of "Summer trip" is on ICP again (beach's failed re-upload
	// left its earlier copy present).
	shown["Summer trip"] = "stored_forever"

	// The same galleries on a phone-sized screen.
	b.do("phone viewport", 30*time.Second, chromedp.EmulateViewport(390, 844), chromedp.Click(chromedp.CSS(`nav a[data-view="galleries"]`)))
	shown["Drafts"] = "stored_forever"
	b.waitFor("the galleries on a phone", galleriesShown(shown))
	b.screenshot("galleries-phone")

	if got := b.eval(`window.__consoleTest || "reloaded"`); got != "same page" {
		t.Errorf("the page reloaded during the test")
	}
	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(errs, "\n"))
	}
	if t.Failed() {
		t.Log(b.state())
	}
}
