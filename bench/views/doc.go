// Package views benchmarks the presence views of CONTRACT section 3.1 on a
// dataset of a million memories (bench/internal/benchdata): gallery_presence
// for the 10,000-item gallery, memory_presence for single memories, a
// gallery_presence_mv refresh and lookups on the MV, with EXPLAIN checks that
// single lookups use indexes. Run with `make bench`.
//
// It imports benchdata and pgtest; nothing of the daemon.
//
// Invariant: a single-memory lookup never scans storage_edges sequentially;
// the benchmark fails if the plan says otherwise.
package views
