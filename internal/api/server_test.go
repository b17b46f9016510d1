package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/edgesync/edgesync/domain"
)

func TestServer_StatusCodes(t *testing.T) {
	e := newEnv(t, func(c *Config, d *Deps) {
		d.Health = NewHealth([]BackendCheck{{Name: "postgres", Check: PoolCheck(d.Pool)}}, 0, nil)
		d.Health.Check(context.Background())
	})
	img := e.image(ptr("https://blob.example/a.jpg"))
	gal := e.gallery([2]string{img, "image"})
	missing := uuid.NewString()
	edge := func(over map[string]any) map[string]any {
		b := map[string]any{"memory_id": img, "memory_type": "image", "artifact": "asset", "backend": "icp-canister",
			"present": true, "content_hash": strings.Repeat("ab", 32), "size_bytes": 10, "sync_state": "idle"}
		for k, v := range over {
			if v == nil {
				delete(b, k)
			} else {
				b[k] = v
			}
		}
		return b
	}
	runID, err := e.rec.Start(context.Background(), "cli", false) // holds the "lock": next Start is 409
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		method string
		path   string
		token  string
		body   any
		want   int
		code   string
	}{
		{"put edge ok", "PUT", "/api/storage/edges", testToken, edge(nil), 200, ""},
		{"put edge sha256 prefix", "PUT", "/api/storage/edges", testToken, edge(map[string]any{"content_hash": "sha256:" + strings.Repeat("AB", 32)}), 200, ""},
		{"put edge no token", "PUT", "/api/storage/edges", "", edge(nil), 401, "unauthorized"},
		{"put edge wrong token", "PUT", "/api/storage/edges", "nope", edge(nil), 401, "unauthorized"},
		{"put edge bad uuid", "PUT", "/api/storage/edges", testToken, edge(map[string]any{"memory_id": "not-a-uuid"}), 400, "bad_request"},
		{"put edge uppercase uuid", "PUT", "/api/storage/edges", testToken, edge(map[string]any{"memory_id": strings.ToUpper(img)}), 400, "bad_request"},
		{"put edge bad type", "PUT", "/api/storage/edges", testToken, edge(map[string]any{"memory_type": "gif"}), 400, "bad_request"},
		{"put edge bad artifact", "PUT", "/api/storage/edges", testToken, edge(map[string]any{"artifact": "thumb"}), 400, "bad_request"},
		{"put edge bad backend", "PUT", "/api/storage/edges", testToken, edge(map[string]any{"backend": "s3"}), 400, "bad_request"},
		{"put edge bad state", "PUT", "/api/storage/edges", testToken, edge(map[string]any{"sync_state": "done"}), 400, "bad_request"},
		{"put edge negative size", "PUT", "/api/storage/edges", testToken, edge(map[string]any{"size_bytes": -1}), 400, "bad_request"},
		{"put edge fractional size", "PUT", "/api/storage/edges", testToken, edge(map[string]any{"size_bytes": 1.5}), 400, "bad_request"},
		{"put edge short hash", "PUT", "/api/storage/edges", testToken, edge(map[string]any{"content_hash": "abc"}), 400, "bad_request"},
		{"put edge missing backend", "PUT", "/api/storage/edges", testToken, edge(map[string]any{"backend": nil}), 400, "bad_request"},
		{"put edge unknown field", "PUT", "/api/storage/edges", testToken, edge(map[string]any{"colour": "red"}), 400, "bad_request"},
		{"put edge trailing data", "PUT", "/api/storage/edges", testToken, `{"memory_id":"` + img + `","memory_type":"image","artifact":"asset","backend":"neon-db"} {}`, 400, "bad_request"},
		{"put edge empty body", "PUT", "/api/storage/edges", testToken, "", 400, "bad_request"},
		{"put edge not json", "PUT", "/api/storage/edges", testToken, "{", 400, "bad_request"},
		{"put edge NUL in location", "PUT", "/api/storage/edges", testToken, edge(map[string]any{"location": "a\x00b"}), 400, "bad_request"},
		{"put edge bad time", "PUT", "/api/storage/edges", testToken, edge(map[string]any{"last_synced_at": "yesterday"}), 400, "bad_request"},
		{"put edge memory missing", "PUT", "/api/storage/edges", testToken, edge(map[string]any{"memory_id": missing}), 404, "not_found"},
		{"put edge too large", "PUT", "/api/storage/edges", testToken, `{"location":"` + strings.Repeat("x", 2<<20) + `"}`, 413, "too_large"},
		{"gallery presence", "GET", "/api/galleries/" + gal + "/presence", "", nil, 200, ""},
		{"gallery presence bad uuid", "GET", "/api/galleries/xyz/presence", "", nil, 400, "bad_request"},
		{"gallery presence bad limit", "GET", "/api/galleries/" + gal + "/presence?limit=501", "", nil, 400, "bad_request"},
		{"gallery presence bad cursor", "GET", "/api/galleries/" + gal + "/presence?cursor=!!!", "", nil, 400, "bad_request"},
		{"gallery presence unknown", "GET", "/api/galleries/" + missing + "/presence", "", nil, 404, "not_found"},
		{"memory presence", "GET", "/api/memories/image/" + img + "/presence", "", nil, 200, ""},
		{"memory presence bad type", "GET", "/api/memories/gif/" + img + "/presence", "", nil, 400, "bad_request"},
		{"memory presence bad uuid", "GET", "/api/memories/image/1234/presence", "", nil, 400, "bad_request"},
		{"memory presence unknown", "GET", "/api/memories/image/" + missing + "/presence", "", nil, 404, "not_found"},
		{"sync status", "GET", "/api/storage/sync-status", "", nil, 200, ""},
		{"sync status bad state", "GET", "/api/storage/sync-status?state=idle", "", nil, 400, "bad_request"},
		{"sync status bad backend", "GET", "/api/storage/sync-status?backend=s3", "", nil, 400, "bad_request"},
		{"sync status bad type", "GET", "/api/storage/sync-status?memory_type=gif", "", nil, 400, "bad_request"},
		{"sync status bad limit", "GET", "/api/storage/sync-status?limit=0", "", nil, 400, "bad_request"},
		{"sync status bad cursor", "GET", "/api/storage/sync-status?cursor=bm9wZQ", "", nil, 400, "bad_request"},
		{"stream bad filter", "GET", "/api/storage/sync-status/stream?state=done", "", nil, 400, "bad_request"},
		{"store forever gallery", "POST", "/api/galleries/" + gal + "/store-forever", testToken, nil, 202, ""},
		{"store forever gallery no token", "POST", "/api/galleries/" + gal + "/store-forever", "", nil, 401, "unauthorized"},
		{"store forever gallery unknown", "POST", "/api/galleries/" + missing + "/store-forever", testToken, nil, 404, "not_found"},
		{"store forever gallery bad uuid", "POST", "/api/galleries/zz/store-forever", testToken, nil, 400, "bad_request"},
		{"store forever memory", "POST", "/api/memories/image/" + img + "/store-forever", testToken, nil, 202, ""},
		{"store forever memory unknown", "POST", "/api/memories/note/" + missing + "/store-forever", testToken, nil, 404, "not_found"},
		{"store forever memory bad type", "POST", "/api/memories/gif/" + img + "/store-forever", testToken, nil, 400, "bad_request"},
		{"reconcile running", "POST", "/admin/reconcile", testToken, nil, 409, "conflict"},
		{"reconcile bad dry_run", "POST", "/admin/reconcile?dry_run=maybe", testToken, nil, 400, "bad_request"},
		{"reconcile no token", "POST", "/admin/reconcile", "", nil, 401, "unauthorized"},
		{"reconcile get", "GET", "/admin/reconcile/" + runID, testToken, nil, 200, ""},
		{"reconcile get no token", "GET", "/admin/reconcile/" + runID, "", nil, 401, "unauthorized"},
		{"reconcile get wrong token", "GET", "/admin/reconcile/" + runID, "nope", nil, 401, "unauthorized"},
		{"reconcile get unknown", "GET", "/admin/reconcile/" + missing, testToken, nil, 404, "not_found"},
		{"reconcile get bad id", "GET", "/admin/reconcile/42", testToken, nil, 400, "bad_request"},
		{"reconcile runs", "GET", "/api/reconcile/runs", "", nil, 200, ""},
		{"reconcile runs bad limit", "GET", "/api/reconcile/runs?limit=0", "", nil, 400, "bad_request"},
		{"reconcile runs limit too big", "GET", "/api/reconcile/runs?limit=201", "", nil, 400, "bad_request"},
		{"backends", "GET", "/api/health/backends", "", nil, 200, ""},
		{"healthz", "GET", "/healthz", "", nil, 200, ""},
		{"readyz", "GET", "/readyz", "", nil, 200, ""},
		{"unknown route", "GET", "/api/nothing", "", nil, 404, "not_found"},
		{"wrong method", "DELETE", "/api/storage/edges", testToken, nil, 405, "method_not_allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body, _ := e.do(tc.method, tc.path, tc.token, tc.body)
			if status != tc.want {
				t.Fatalf("status %d, want %d; body %v", status, tc.want, body)
			}
			if tc.code != "" && errCode(body) != tc.code {
				t.Fatalf("error code %q, want %q; body %v", errCode(body), tc.code, body)
			}
			if status >= 400 {
				if msg, _ := body["error"].(map[string]any)["message"].(string); msg == "" {
					t.Fatalf("error without message: %v", body)
				}
			}
		})
	}
}

func TestServer_StatusCodesOtherConfigs(t *testing.T) {
	down := errors.New("connection refused")
	tests := []struct {
		name   string
		mutate func(*Config, *Deps)
		setup  func(*env)
		method string
		path   string
		token  string
		want   int
		code   string
	}{
		{"no token configured", func(c *Config, d *Deps) { c.AdminToken = "" }, nil, "PUT", "/api/storage/edges", "anything", 403, "forbidden"},
		{"no token configured admin", func(c *Config, d *Deps) { c.AdminToken = "" }, nil, "POST", "/admin/reconcile", "", 403, "forbidden"},
		{"no reconciler", func(c *Config, d *Deps) { d.Reconciler = nil }, nil, "POST", "/admin/reconcile", testToken, 503, "unavailable"},
		{"no reconciler get", func(c *Config, d *Deps) { d.Reconciler = nil }, nil, "GET", "/admin/reconcile/" + uuid.NewString(), testToken, 503, "unavailable"},
		{"no reconciler runs", func(c *Config, d *Deps) { d.Reconciler = nil }, nil, "GET", "/api/reconcile/runs", "", 503, "unavailable"},
		{"no token configured admin get", func(c *Config, d *Deps) { c.AdminToken = "" }, nil, "GET", "/admin/reconcile/" + uuid.NewString(), "", 403, "forbidden"},
		{"reconcile starts", nil, nil, "POST", "/admin/reconcile?dry_run=true", testToken, 202, ""},
		{"panic is a 500", nil, func(e *env) { e.rec.panicky = true }, "POST", "/admin/reconcile", testToken, 500, "internal"},
		{"not ready", func(c *Config, d *Deps) { d.Ready = func() bool { return false } }, nil, "GET", "/readyz", "", 503, ""},
		{"backend down", func(c *Config, d *Deps) {
			d.Health = NewHealth([]BackendCheck{{Name: "ok", Check: func(context.Context) error { return nil }}, {Name: "icp", Check: func(context.Context) error { return down }}}, 0, nil)
			d.Health.Check(context.Background())
		}, nil, "GET", "/api/health/backends", "", 503, ""},
		{"backend check panics", func(c *Config, d *Deps) {
			d.Health = NewHealth([]BackendCheck{{Name: "bad", Check: func(context.Context) error { panic("boom") }}}, 0, nil)
			d.Health.Check(context.Background())
		}, nil, "GET", "/api/health/backends", "", 503, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.mutate)
			if tc.setup != nil {
				tc.setup(e)
			}
			status, body, _ := e.do(tc.method, tc.path, tc.token, nil)
			if status != tc.want {
				t.Fatalf("status %d, want %d; body %v", status, tc.want, body)
			}
			if tc.code != "" && errCode(body) != tc.code {
				t.Fatalf("code %q, want %q; body %v", errCode(body), tc.code, body)
			}
		})
	}
}

func TestServer_ReconcileStart(t *testing.T) {
	e := newEnv(t, nil)
	status, body, hdr := e.do("POST", "/admin/reconcile?dry_run=true", testToken, nil)
	if status != 202 {
		t.Fatalf("status %d %v", status, body)
	}
	id, _ := body["run_id"].(string)
	if !domain.CanonicalUUID(id) || hdr.Get("Location") != "/admin/reconcile/"+id {
		t.Fatalf("run_id %q location %q", id, hdr.Get("Location"))
	}
	if !e.rec.lastDry || e.rec.lastTrig != "http" {
		t.Fatalf("reconciler got dry=%v trigger=%q", e.rec.lastDry, e.rec.lastTrig)
	}
	status, body, _ = e.do("GET", "/admin/reconcile/"+id, testToken, nil)
	if status != 200 || body["run_id"] != id || body["state"] != "running" {
		t.Fatalf("get run: %d %v", status, body)
	}
}

func TestServer_RequestID(t *testing.T) {
	e := newEnv(t, nil)
	_, _, hdr := e.do("GET", "/healthz", "", nil)
	if !domain.CanonicalUUID(hdr.Get("X-Request-Id")) {
		t.Fatalf("generated request id %q", hdr.Get("X-Request-Id"))
	}
	req, _ := http.NewRequest("GET", e.http.URL+"/healthz", nil)
	req.Header.Set("X-Request-Id", "trace-123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Request-Id"); got != "trace-123" {
		t.Fatalf("echoed request id %q", got)
	}
}

func TestServer_HandlerDeadline(t *testing.T) {
	e := newEnv(t, func(c *Config, d *Deps) { c.HandlerTimeout = 50 * time.Millisecond })
	// A reconciler that outlives the handler deadline: it is cut, and the
	// answer still comes (503 timeout).
	e.rec.mu.Lock()
	e.rec.block = true
	e.rec.mu.Unlock()
	start := time.Now()
	status, body, _ := e.do("GET", "/admin/reconcile/"+uuid.NewString(), testToken, nil)
	if status != 503 || errCode(body) != "timeout" || time.Since(start) > 2*time.Second {
		t.Fatalf("status %d after %s: %v", status, time.Since(start), body)
	}
}

// TestServer_Console: GET / is the storage console's page and /console/{file}
// its files, each with the console's Content-Security-Policy and nosniff;
// unknown paths keep the JSON 404 (the page is "/" exactly, not a catch-all).
func TestServer_Console(t *testing.T) {
	e := newEnv(t, nil)
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := e.http.Client().Get(e.http.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, tc := range []struct{ path, ctype, contains string }{
		{"/", "text/html", `src="/console/console.js"`},
		{"/console/console.js", "text/javascript", "EventSource"},
		{"/console/metrics.js", "text/javascript", "parse"},
		{"/console/console.css", "text/css", "body"},
		{"/console/icon.svg", "image/svg+xml", "<svg"},
	} {
		resp, body := get(tc.path)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.ctype) || !strings.Contains(body, tc.contains) {
			t.Errorf("GET %s = %d %s, want 200 %s containing %q", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.ctype, tc.contains)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Errorf("GET %s: Content-Security-Policy %q", tc.path, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no X-Content-Type-Options: nosniff", tc.path)
		}
	}
	for _, path := range []string{"/console/nope.js", "/console/index.html", "/console/..%2fconsole.go", "/nothing", "/console/"} {
		resp, body := get(path)
		if resp.StatusCode != 404 || !strings.Contains(body, `"not_found"`) {
			t.Errorf("GET %s = %d %s, want the JSON 404", path, resp.StatusCode, body)
		}
	}
	if resp, _ := get("/?x=1"); resp.StatusCode != 200 {
		t.Errorf("GET /?x=1 = %d", resp.StatusCode)
	}
}
