// Package pipeline benchmarks the CDC pipeline end to end (issue 3): a fixed
// WAL of 100,000 source changes read by pg_recvlogical (the decode yardstick),
// by the edgesync daemon doing its whole job (edges written, memory and edge
// events acked by JetStream, slot confirmed), and the same edge writes as
// plain set-based SQL (the write yardstick); then the commit → JetStream
// latency at a steady 2,000 changes/s and the daemon's peak RSS. Run it with
// `make bench`; docs/benchmarks.md has the figures and how to read them.
//
// The daemon runs as a subprocess (this package's test binary re-executed
// with EDGESYNC_BENCH_SUBPROCESS=daemon), so its RSS and CPU profile are its
// own. It imports the daemon and test helpers; nothing imports it.
package pipeline
