package api

import (
	"net/http"
	"strings"

	"github.com/edgesync/edgesync/internal/console"
)

// route is one entry of the API. The mux and the OpenAPI conformance test both
// read routeTable, so a route cannot exist undocumented or the reverse.
type route struct {
	method  string
	path    string // net/http pattern path; {name} segments as in OpenAPI ("/{$}" is OpenAPI's "/")
	op      string // OpenAPI operationId: the name generated clients give the call
	token   bool   // needs the admin token: every write and every admin route
	stream  bool   // long-lived: no handler deadline, no body
	handler func(s *Server, w http.ResponseWriter, r *http.Request)
}

func routeTable() []route {
	return []route{
		{method: http.MethodPut, op: "putStorageEdge", path: "/api/storage/edges", token: true, handler: (*Server).putEdge},
		{method: http.MethodGet, op: "listGalleries", path: "/api/galleries", handler: (*Server).listGalleries},
		// Two segments after /api/galleries/ never match this one-segment
		// path, so it does not clash with {id}/presence.
		{method: http.MethodGet, op: "getGalleriesPresence", path: "/api/galleries/presence", handler: (*Server).galleriesPresence},
		{method: http.MethodGet, op: "getGalleryPresence", path: "/api/galleries/{id}/presence", handler: (*Server).galleryPresence},
		{method: http.MethodGet, op: "getMemoryPresence", path: "/api/memories/{type}/{id}/presence", handler: (*Server).memoryPresence},
		{method: http.MethodGet, op: "listSyncStatus", path: "/api/storage/sync-status", handler: (*Server).syncStatus},
		{method: http.MethodGet, op: "streamSyncStatus", path: "/api/storage/sync-status/stream", stream: true, handler: (*Server).syncStream},
		{method: http.MethodPost, op: "storeGalleryForever", path: "/api/galleries/{id}/store-forever", token: true, handler: (*Server).storeForeverGallery},
		{method: http.MethodPost, op: "storeMemoryForever", path: "/api/memories/{type}/{id}/store-forever", token: true, handler: (*Server).storeForeverMemory},
		{method: http.MethodPost, op: "startReconcile", path: "/admin/reconcile", token: true, handler: (*Server).startReconcile},
		{method: http.MethodGet, op: "getReconcileRun", path: "/admin/reconcile/{run_id}", token: true, handler: (*Server).getReconcile},
		{method: http.MethodGet, op: "listReconcileRuns", path: "/api/reconcile/runs", handler: (*Server).listReconcileRuns},
		{method: http.MethodGet, op: "getBackendHealth", path: "/api/health/backends", handler: (*Server).backends},
		{method: http.MethodGet, op: "getLiveness", path: "/healthz", handler: (*Server).healthz},
		{method: http.MethodGet, op: "getReadiness", path: "/readyz", handler: (*Server).readyz},
		{method: http.MethodGet, op: "getMetrics", path: "/metrics", handler: (*Server).serveMetrics},
		// The storage console (internal/console): HTML, CSS and JavaScript, not JSON.
		{method: http.MethodGet, op: "getConsole", path: "/{$}", handler: (*Server).consolePage},
		{method: http.MethodGet, op: "getConsoleAsset", path: "/console/{file}", handler: (*Server).consoleAsset},
	}
}

// openAPIPath is a route's path as docs/openapi.yaml spells it.
func openAPIPath(p string) string { return strings.TrimSuffix(p, "{$}") }

func (s *Server) consolePage(w http.ResponseWriter, r *http.Request)  { console.Page(w, r) }
func (s *Server) consoleAsset(w http.ResponseWriter, r *http.Request) { console.Asset(w, r) }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range routeTable() {
		fn := rt.handler
		var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fn(s, w, r) })
		if !rt.stream {
			h = s.withDeadline(h)
		}
		h = s.withBodyLimit(h)
		if rt.token {
			h = s.withToken(h)
		}
		mux.Handle(rt.method+" "+rt.path, h)
	}
	return s.withRequestID(s.withAccessLog(s.withRecover(jsonMuxErrors(mux))))
}

// jsonMuxErrors gives the mux's own 404 and 405 answers (plain text from
// http.Error) the contract's error shape; handlers' JSON answers pass as they
// are.
func jsonMuxErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(&muxErrorWriter{ResponseWriter: w}, r)
	})
}

type muxErrorWriter struct {
	http.ResponseWriter
	replaced bool
}

func (m *muxErrorWriter) WriteHeader(code int) {
	plain := strings.HasPrefix(m.Header().Get("Content-Type"), "text/plain")
	if plain && (code == http.StatusNotFound || code == http.StatusMethodNotAllowed) {
		m.replaced = true
		e := notFound("no such route")
		if code == http.StatusMethodNotAllowed {
			e = &apiError{Status: code, Code: "method_not_allowed", Message: "method not allowed; see the Allow header"}
		}
		writeError(m.ResponseWriter, e)
		return
	}
	m.ResponseWriter.WriteHeader(code)
}

func (m *muxErrorWriter) Write(b []byte) (int, error) {
	if m.replaced {
		return len(b), nil
	}
	return m.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (SSE deadlines).
func (m *muxErrorWriter) Unwrap() http.ResponseWriter { return m.ResponseWriter }
