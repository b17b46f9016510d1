// Package presencecache keeps encoded presence answers (a gallery's pages
// without a cursor, a memory's presence) in memory so the HTTP API serves them
// at the server's own speed. It is bounded in bytes (answers plus the
// membership index of the cached galleries, evicted least recently used
// first), and every entry expires TTL after it was read from Postgres.
//
// Invalidation follows the JetStream stream, the same way every instance feeds
// its SSE hub (internal/ssefeed calls MemoryChanged, GalleryChanged and
// Following): an edge event drops that memory's answer and the pages of every
// cached gallery holding the memory; a gallery status event drops the
// gallery. Membership changes (gallery_items) are not in the stream: the TTL
// bounds them. Fills are shared by concurrent requests of one key
// (singleflight) and run detached from any one request.
//
// It may import the domain vocabulary and the Prometheus client; never api,
// ssefeed, daemon, config or pgx: the API passes fill functions in.
//
// Invariant: an answer is stored only if nothing that could change it was
// invalidated while it was read (a fill that an invalidation raced is marked
// stale, or its generation is behind after a reset), so once an instance has
// read an event, no answer read before that event's change is served again.
package presencecache
