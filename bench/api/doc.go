// Package api benchmarks the HTTP API (internal/api) in-process on a real TCP
// listener over the shared million-memory dataset: first-page presence of the
// 10,000-item gallery and single-memory presence, sequentially (p50/p99), then
// 50 concurrent clients for BENCH_API_DURATION (default 10s) for requests/s.
// Run with `make bench`.
//
// It imports internal/api, benchdata and pgtest; nothing of the daemon.
//
// Invariant: every measured request must answer 200; a benchmark that counts
// errors as throughput is worthless.
package api
