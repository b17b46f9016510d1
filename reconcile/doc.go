// Package reconcile owns level-triggered repair runs (CONTRACT section 6,
// DESIGN decision 9): it finds orphans, missing edges, drift, stuck and failed
// syncs with set-based SQL in key-range chunks, repairs them unless the run is
// a dry run, and records every run in reconcile_runs.
//
// It may import cdc (types), pgx, nats.go, zap and prometheus; never daemon,
// config or a sink.
//
// Invariant: two runs never overlap (a Postgres advisory lock), and every repair
// is idempotent, so a run racing the CDC pipeline converges to the same edges.
package reconcile
