// Package pipeline is the middle of the flow: one leader's CDC session. It
// prepares the publication and the slot, takes (or resumes) the initial
// snapshot, streams the slot through Router — a pure function from a decoded
// change to edge operations and events (subject, message id, envelope) — and
// hands the result to the sinks through small consumer-side interfaces. It
// owns the pipeline state row (edgesync_pipeline_state) and the pipeline's
// metrics.
//
// It may import cdc, domain and the sinks it feeds (sinks/edges, sinks/nats);
// never config, daemon, reconcile, the API or the ICP mirror: the daemon
// translates the configuration into Config and follows the stream through
// Hooks.
//
// Invariant: the slot is confirmed only past changes whose edge writes are
// committed and whose events JetStream acknowledged (cdc.Tracker); a
// restarted session resumes from the confirmed LSN and reproduces the same
// message ids.
package pipeline
