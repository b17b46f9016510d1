// Package mirror keeps memories on the ICP memory-store canister in step with their
// icp-canister edges (CONTRACT section 8).
//
// It owns the durable mirror jobs (River, in Postgres: one job per memory, retried with
// exponential backoff), the wake queue the pipeline feeds without ever blocking, the one scan of
// migrating edges that finds work the wakes missed, the lazy connection of the canister client, the
// asset fetcher (download with SHA-256, spooling of large files), the edge and sync_attempts
// updates that record each outcome, upload progress (published through a function the daemon
// passes in), its metrics, the zap adapter River logs through, and the Checker reconcile compares
// edges with.
//
// It may import domain, icp (the canister client), reconcile (only the ICPChecker types it
// implements), pgx, River, zap and Prometheus; never config, daemon, cdc, the pipeline or a sink:
// the daemon translates its configuration into Config.
//
// The one invariant: an edge becomes present only after the canister confirmed that exact content
// (same SHA-256), and every failure leaves a sync_error a person can act on.
package mirror
