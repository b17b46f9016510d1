// Package ssefeed feeds the SSE hub of GET /api/storage/sync-status/stream
// from JetStream, on every instance, leader or standby: it follows
// `<prefix>.edge.>` and `<prefix>.sync.progress` in the stream with an
// ordered consumer and hands each message to the hub, a `sync` event with the
// message's Nats-Msg-Id as its SSE id, or a `progress` event.
//
// Because every instance reads the same stream, every instance's hub holds the
// same events in the same order under the same ids, so a client resumes with
// Last-Event-ID on whichever instance the Service sends it to. At start the
// feed reads the stream's recent past into the hub's resume ring (without
// sending it to anyone) so that holds for a freshly started instance too.
//
// With an Invalidator (the presence cache) the same consumer also reads
// `<prefix>.gallery.status` and tells it which memories each live edge event
// and which gallery each status event changed, and when the feed starts and
// stops following the stream; no second consumer per instance.
//
// It may import the domain vocabulary, nats.go, zap and the Prometheus client;
// never daemon, config, a sink or api (the hub is a small interface here).
//
// Invariant: the hub gets each stream message at most once and in stream
// order, across consumer resets, NATS restarts and re-subscriptions: the feed
// remembers the next stream sequence it wants and drops anything below it.
package ssefeed
