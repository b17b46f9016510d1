// Package gallerystatus owns the gallery status tracker: it learns which
// memories and galleries changed (from the daemon, which sees the CDC
// stream), recomputes those galleries' status from the gallery_presence view
// after a short debounce, publishes `<prefix>.gallery.status` when a status
// changed, and keeps gallery_presence_mv fresh with a debounced refresh. Its
// table, edgesync_gallery_status, also holds per gallery how many items have
// an edge migrating or failed, and a copy of the gallery's created_at, for
// GET /api/galleries; galleries created without items (which no CDC change
// announces) are adopted by a periodic look for galleries without a row.
//
// It may import pgx, zap, the Prometheus client and cdc (vocabulary); never
// daemon, config, a sink or api. Publishing is a function the daemon passes in.
//
// Invariant: a status change is published before the new status and version
// are stored (edgesync_gallery_status), and its msg id is
// gallery/<id>/<version>/<new status>; a crash in between republishes the same id, which
// JetStream drops as a duplicate, so each change reaches the stream once.
package gallerystatus
