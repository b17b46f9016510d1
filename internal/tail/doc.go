// Package tail follows the event stream for a person at a terminal (`edgesync
// tail`): an ordered consumer on the stream, filtered by subject pattern and
// memory id, starting at new events, at a time or at a stream sequence, and
// printing one line per event (or the JSON envelope, one per line).
//
// It may import sinks/nats (subject matching), google/uuid and
// nats.go; never daemon, config or cmd: the command translates the
// configuration into Options.
//
// Invariant: it never changes the stream: the ordered consumer is ephemeral
// and acknowledges nothing, so tailing cannot take an event from another
// consumer.
package tail
