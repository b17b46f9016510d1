// Package scaleout checks and measures edgesync split over two pipelines
// (issue 13): two daemons, each with its own slot, publication, leader lock
// and disjoint memory tables (images+videos, notes+documents+audio), both
// with storage_edges in their publication. The test runs both in-process
// and checks that every memory and edge event is in the stream exactly once,
// published by the pipeline that owns the memory type; the benchmark runs
// the real binary as processes, one pipeline doing all against two together
// on the same workload, with each walsender's and each daemon's CPU. Figures
// are in docs/scaling.md and docs/benchmarks.md.
//
// It imports the daemon and test helpers; nothing imports it.
package scaleout
