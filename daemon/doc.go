// Package daemon is the composition root of `edgesync run`: it translates the
// global config into each component's own, connects Postgres and NATS (or
// starts the embedded NATS server), elects the leader that reads the slot,
// runs the CDC pipeline (cdc → sinks/edges + sinks/nats), the HTTP API and the
// leader-only jobs, and shuts them down in order.
//
// It may import every project package except cmd.
//
// Invariant: one fatal error stops everything and nothing leaks; shutdown
// stops reading WAL first, lets the sinks drain, confirms the last durable LSN,
// then stops HTTP and drains NATS, within the configured timeout.
package daemon
