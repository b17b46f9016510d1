// Package edges owns the storage_edges writer of the CDC pipeline: it turns
// memory-row changes into the edges of CONTRACT section 4 with batched,
// idempotent SQL (collapse per memory, one multi-row upsert and one delete per
// batch) and reports each change durable once its batch has committed.
//
// It may import cdc (types) and pgx; never daemon, config or another sink.
//
// Invariant: a batch leaves exactly the edges that writing its changes one by
// one leaves (a memory deleted and re-created within a batch loses its old
// edges first, under either ICP-edge policy); applying the same changes again,
// in commit order, leaves the same edges and, except for such a re-created
// memory, writes nothing (no-op updates are skipped, so replays and snapshots
// produce no spurious edge events).
package edges
