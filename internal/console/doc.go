// Package console owns the storage console that `edgesync run` serves at
// GET / (CONTRACT section 7): one page of plain HTML, CSS and JavaScript,
// embedded in the binary, with no build step and nothing loaded from
// elsewhere. The page reads the same HTTP API and the same /metrics series as
// everyone else (the Grafana dashboard included) and asks for the admin token
// only when a person starts an action.
//
// It imports only the standard library: internal/api mounts its handlers in
// the route table, so the console cannot reach around the API into the
// database.
//
// Invariant: every answer carries a Content-Security-Policy that allows only
// the console's own origin (no inline scripts or styles, no other hosts), so
// a title or sync_error in the data can never run as code.
package console
