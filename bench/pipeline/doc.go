// Package pipeline benchmarks the CDC pipeline end to end (issues 3 and 13):
// a fixed WAL of 100,000 source changes (60,000 inserts, 20,000 URL updates,
// 20,000 deletes, in transactions of 100) on a slot created before it;
// edgesync's whole job on it (every memory and edge event acked by
// JetStream, every edge applied, the slot confirmed past the load and past
// its own edge writes); then the three plain parts side by side on the same
// WAL and data — pg_recvlogical from a slot copied at the daemon's slot's
// start, the same edge writes as set-based SQL on a scratch table, and a
// minimal async JetStream publisher of as many messages of the same mean
// size — and their wall time over edgesync's (the ratio); the commit →
// JetStream ack latency at a steady 2,000 changes/s; the daemon's peak RSS.
// Run it with `make bench`; docs/benchmarks.md has the figures and how to
// read them.
//
// The daemon runs as a process: the real binary (built with go build), so
// its VmHWM is the daemon's own; with BENCH_CPUPROFILE set, this package's
// test binary re-executed with EDGESYNC_BENCH_SUBPROCESS=daemon instead, which
// profiles itself. It imports the daemon and test helpers; nothing imports it.
package pipeline
