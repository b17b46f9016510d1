// Package daemon is the composition root of `edgesync run`: it translates the
// global config into each component's own, connects Postgres and NATS (or
// starts the embedded NATS server) with one JetStream context, elects the
// leader that reads the slot, and runs every long-running part in one
// errgroup: the HTTP API, the reconcile trigger and storage metrics on every
// instance; the pipeline, the gallery status tracker, the ICP mirror and the
// periodic reconcile on the leader.
//
// It may import every project package except cmd.
//
// Invariant: one fatal error stops everything and nothing leaks; whether a
// failure is fatal or restarted is decided in one place (Run for fatal,
// supervise/restart for restartable); shutdown stops reading WAL first, lets
// the sinks drain, confirms the last durable LSN, then stops HTTP and drains
// NATS, within EDGESYNC_SHUTDOWN_TIMEOUT.
package daemon
