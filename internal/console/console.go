package console

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed static
var static embed.FS

// AssetPrefix is the path under which the page's scripts, styles and icon are
// served: GET /console/{file}.
const AssetPrefix = "/console/"

// Policy is the Content-Security-Policy of every console answer: the page's
// own origin only (its files, its fetches and its event stream), no inline
// code, no framing.
const Policy = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"

// contentTypes of the files the console embeds; anything else is not served.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

// Page answers GET /: the console's one HTML page.
func Page(w http.ResponseWriter, r *http.Request) { serve(w, "index.html", "no-cache") }

// Asset answers GET /console/{file}. The files change with the binary, so a
// browser revalidates them rather than caching them for long.
func Asset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	if name == "" {
		name = strings.TrimPrefix(r.URL.Path, AssetPrefix)
	}
	if name == "index.html" || strings.ContainsAny(name, `/\`) || !fs.ValidPath(name) {
		notFound(w)
		return
	}
	serve(w, name, "no-cache")
}

func serve(w http.ResponseWriter, name, cache string) {
	ct, ok := contentTypes[path.Ext(name)]
	if !ok {
		notFound(w)
		return
	}
	b, err := static.ReadFile("static/" + name)
	if err != nil {
		notFound(w)
		return
	}
	h := w.Header()
	securityHeaders(h)
	h.Set("Content-Type", ct)
	h.Set("Cache-Control", cache)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b) // the client went away: nothing left to tell it
}

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", Policy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

// notFound answers in the API's error shape, like every other unknown path.
func notFound(w http.ResponseWriter) {
	h := w.Header()
	securityHeaders(h)
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	_, _ = w.Write([]byte(`{"error":{"code":"not_found","message":"no such console file"}}` + "\n"))
}

// Files lists the embedded files (for tests and docs).
func Files() []string {
	entries, _ := fs.ReadDir(static, "static") // embedded: cannot fail
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// File returns one embedded file's content.
func File(name string) ([]byte, error) { return static.ReadFile("static/" + name) }
