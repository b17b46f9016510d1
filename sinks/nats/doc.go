// Package nats owns the JetStream side of the pipeline: it creates or updates
// the EDGESYNC stream and publishes events asynchronously, many in flight, each
// with its Nats-Msg-Id, reporting every change durable when JetStream has
// acknowledged it.
//
// It may import cdc (types) and nats.go; never daemon, config or another sink.
//
// Invariant: a change is reported durable only on its own PubAck (a duplicate
// ack counts); any failure stops the publisher so the pipeline replays from the
// last confirmed LSN with the same message ids.
package nats
