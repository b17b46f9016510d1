package api

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/edgesync/edgesync/internal/pgtest"
)

// TestHealth_AnswersFromLastCheck: requests to the public endpoint never run
// a check; they get the last periodic result (503 before the first one).
func TestHealth_AnswersFromLastCheck(t *testing.T) {
	var calls atomic.Int64
	h := NewHealth([]BackendCheck{{Name: "postgres", Check: func(context.Context) error { calls.Add(1); return nil }}}, 0, nil)
	e := newEnv(t, func(c *Config, d *Deps) { d.Health = h })

	status, body, _ := e.do("GET", "/api/health/backends", "", nil)
	bs, _ := body["backends"].([]any)
	if status != 503 || body["checked_at"] != nil || len(bs) != 1 || bs[0].(map[string]any)["error"] != "not checked yet" {
		t.Fatalf("before the first check: %d %v", status, body)
	}
	h.Check(context.Background())
	for range 5 {
		status, body, _ = e.do("GET", "/api/health/backends", "", nil)
		if status != 200 || body["checked_at"] == nil {
			t.Fatalf("after a check: %d %v", status, body)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the check ran %d times, want 1 (requests must not start checks)", n)
	}
}

// TestHealth_ReasonsWithoutConnectionDetails feeds real failures (a missing
// database, an unknown role, a closed port, an unresolvable host, a hung
// backend) and checks that the public answer gives a reason a person can act
// on and none of the host, port, user or database, while the log keeps the
// driver's message once.
func TestHealth_ReasonsWithoutConnectionDetails(t *testing.T) {
	base, err := url.Parse(pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	pool := func(mutate func(u *url.URL)) func(context.Context) error {
		u := *base
		mutate(&u)
		q := u.Query()
		q.Set("connect_timeout", "2")
		u.RawQuery = q.Encode()
		p, err := pgxpool.New(context.Background(), u.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return PoolCheck(p)
	}
	secrets := []string{base.Host, base.Port(), strings.TrimPrefix(base.Path, "/"), "edgesync_nobody", "db_secret_name", closedAddr,
		"no-such-host-edgesync.invalid", "127.0.0.1"}
	checks := []BackendCheck{
		{Name: "nodb", Check: pool(func(u *url.URL) { u.Path = "/db_secret_name" })},
		{Name: "norole", Check: pool(func(u *url.URL) { u.User = url.User("edgesync_nobody") })},
		{Name: "closed", Check: pool(func(u *url.URL) { u.Host = closedAddr })},
		{Name: "nodns", Check: pool(func(u *url.URL) { u.Host = "no-such-host-edgesync.invalid:5432" })},
		{Name: "hung", Check: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }},
		{Name: "said", Check: func(context.Context) error { return Unhealthy("answered HTTP %d", 502) }},
	}
	want := map[string]string{
		"nodb":   "the database does not exist",
		"norole": "authentication failed: check the user and password of the setting",
		"closed": "connection refused",
		"nodns":  "the host name does not resolve",
		"hung":   "no answer within 300ms",
		"said":   "answered HTTP 502",
	}
	core, logs := observer.New(zap.WarnLevel)
	h := NewHealth(checks, 300*time.Millisecond, zap.New(core))
	e := newEnv(t, func(c *Config, d *Deps) { d.Health = h })
	h.Check(context.Background())
	h.Check(context.Background())

	resp, err := http.Get(e.http.URL + "/api/health/backends")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("status %d: %s", resp.StatusCode, raw)
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(string(raw), s) {
			t.Errorf("the answer contains %q: %s", s, raw)
		}
	}
	var body struct {
		Backends []BackendStatus `json:"backends"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatal(err)
	}
	for _, b := range body.Backends {
		if b.OK || b.Error != want[b.Name] {
			t.Errorf("%s: ok=%v reason %q, want %q", b.Name, b.OK, b.Error, want[b.Name])
		}
	}
	// The log has the driver's message (with its details), once per change.
	if n := logs.FilterMessage("backend check failed").FilterField(zap.String("backend", "nodb")).Len(); n != 1 {
		t.Errorf("nodb failure logged %d times, want 1", n)
	}
	for _, l := range logs.FilterField(zap.String("backend", "nodb")).All() {
		if !strings.Contains(l.ContextMap()["error"].(string), "db_secret_name") {
			t.Errorf("the log lacks the driver's message: %v", l.ContextMap())
		}
	}
}

// TestAccessLog_Levels: successful reads (probes, presence at thousands a
// second) log at debug; writes and failures at info, 5xx at warn.
func TestAccessLog_Levels(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	s := &Server{log: zap.New(core), metrics: newMetrics(prometheus.NewRegistry())}
	h := s.withAccessLog(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/missing":
			w.WriteHeader(http.StatusNotFound)
		case "/broken":
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	for _, tc := range []struct {
		method, path string
		want         zapcore.Level
	}{
		{http.MethodGet, "/api/galleries", zap.DebugLevel},
		{http.MethodHead, "/healthz", zap.DebugLevel},
		{http.MethodPut, "/api/storage/edges", zap.InfoLevel},
		{http.MethodGet, "/missing", zap.InfoLevel},
		{http.MethodGet, "/broken", zap.WarnLevel},
	} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(tc.method, tc.path, nil))
		all := logs.TakeAll()
		if len(all) != 1 || all[0].Level != tc.want {
			t.Errorf("%s %s: logged %v, want one line at %s", tc.method, tc.path, all, tc.want)
		}
	}
}
