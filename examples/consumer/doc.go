// Command consumer is a small, complete consumer of edgesync's events, the
// one docs/consumers.md walks through: a durable pull consumer on the
// EDGESYNC stream that applies memory and edge events to a model once per
// event id, keeps the stream's order by taking one event at a time, and
// starts over from Postgres after a `sync.slot_lost` event.
//
// It must not import any edgesync package: it is what another service
// writes, with nats.go alone (internal/archtest keeps it so).
//
// Invariant: an event is acknowledged only after its effect (and its id)
// is recorded, so a crash redelivers it and the id check skips it.
package main
