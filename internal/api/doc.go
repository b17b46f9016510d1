// Package api owns edgesync's HTTP API (CONTRACT section 7): storage edge
// upserts, the gallery list, gallery and memory presence (one or a page of
// galleries), the sync-status list and its live Server-Sent Events stream
// (filtered by backend, state, memory or gallery), "store forever" requests,
// reconcile triggers and the run history, health, readiness and metrics; and
// it mounts the storage console (internal/console) at GET /.
//
// Gallery first pages and memory presence may be answered from the presence
// cache (internal/presencecache, Deps.Presence), which keeps the encoded
// answers this package reads and encodes.
//
// It may import reconcile (for its Run type and sentinels), internal/
// gallerystatus (the one definition of a gallery's migrating and failed
// counts), internal/presencecache, internal/console (the console's embedded
// files), pgx, zap and the Prometheus client; never daemon, config, cdc or a
// sink. The daemon translates
// the global configuration into Config and Deps; internal/ssefeed feeds the
// SSE hub from JetStream on every instance.
//
// Invariant: every route is declared once in the route table (routes.go),
// which both the mux and the OpenAPI conformance test read, and every error
// answer, including a recovered panic, has the shape
// {"error":{"code":"...","message":"..."}}.
package api
