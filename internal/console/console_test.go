package console

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
)

func TestPage_Headers(t *testing.T) {
	rec := httptest.NewRecorder()
	Page(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	if got := rec.Header().Get("Content-Security-Policy"); got != Policy {
		t.Errorf("Content-Security-Policy %q, want %q", got, Policy)
	}
	if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Error("no X-Content-Type-Options: nosniff")
	}
}

func TestAsset_OnlyEmbeddedFiles(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+AssetPrefix+"{file}", Asset)
	for path, want := range map[string]int{
		"/console/console.js":  200,
		"/console/console.css": 200,
		"/console/icon.svg":    200,
		"/console/metrics.js":  200,
		"/console/index.html":  404, // the page is served at / only
		"/console/missing.js":  404,
		"/console/doc.go":      404,
		"/console/%2e%2e":      404,
	} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != want {
			t.Errorf("GET %s = %d, want %d", path, rec.Code, want)
		}
		if rec.Header().Get("Content-Security-Policy") != Policy {
			t.Errorf("GET %s has no console CSP", path)
		}
	}
}

// TestPage_NoInlineCode: the policy forbids inline scripts and styles, so the
// page must not depend on any (the browser would refuse them silently).
func TestPage_NoInlineCode(t *testing.T) {
	for _, name := range Files() {
		b, _ := File(name)
		s := string(b)
		if strings.HasSuffix(name, ".html") {
			for _, bad := range []*regexp.Regexp{
				regexp.MustCompile(`<script(?:\s[^>]*)?>[^<\s]`), // a script element with a body
				regexp.MustCompile(`<script(?:\s[^>]*)?>\s*</script>`),
				regexp.MustCompile(`<style`),
				regexp.MustCompile(`\sstyle=`),
				regexp.MustCompile(`\son[a-z]+=`),
				regexp.MustCompile(`(?:src|href)="(?:https?:)?//`),
			} {
				for _, m := range bad.FindAllString(s, -1) {
					if !strings.Contains(m, `src="/console/`) {
						t.Errorf("%s: %q is inline code, a handler attribute or another origin", name, m)
					}
				}
			}
		}
		if strings.HasSuffix(name, ".js") && (strings.Contains(s, "innerHTML") || strings.Contains(s, "eval(") || strings.Contains(s, "setAttribute(\"style")) {
			t.Errorf("%s writes HTML or code from strings", name)
		}
	}
}

// TestConsole_MetricsAreGrafanas (issue 14, part 6): every Prometheus series
// the console reads from /metrics is one the Grafana dashboard also queries,
// so the two screens show the same numbers from the same source.
func TestConsole_MetricsAreGrafanas(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/grafana/edgesync-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	name := regexp.MustCompile(`\bedgesync_[a-z0-9_]+\b`)
	grafana := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "expr" {
					for _, n := range name.FindAllString(s, -1) {
						grafana[n] = true
					}
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	var shown []string
	for _, f := range Files() {
		if !strings.HasSuffix(f, ".js") {
			continue
		}
		b, _ := File(f)
		shown = append(shown, name.FindAllString(string(b), -1)...)
	}
	sort.Strings(shown)
	if len(shown) < 8 {
		t.Fatalf("the console names only %d series: %v", len(shown), shown)
	}
	for _, n := range shown {
		if !grafana[n] {
			t.Errorf("the console shows %s, which no panel of deploy/grafana/edgesync-dashboard.json queries", n)
		}
	}
}
