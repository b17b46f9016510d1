-- GET /api/galleries lists galleries with their counts and status, and can
-- filter by status. The gallery status tracker (internal/gallerystatus) keeps
-- per gallery, besides the status and counts of 00006, how many of its items
-- have an edge migrating or failed (so a list can say "storing…" or "failed"
-- per gallery), and a copy of the gallery's created_at: with it, a status
-- filter is an index range scan in the list's order (newest first) instead of
-- a walk over every gallery computing each one's status.

-- +goose Up
ALTER TABLE edgesync_gallery_status
    ADD COLUMN migrating          int NOT NULL DEFAULT 0,
    ADD COLUMN failed             int NOT NULL DEFAULT 0,
    ADD COLUMN gallery_created_at timestamptz;

-- Rows written before this step get their counts and created_at from the
-- tracker's recheck at the daemon's start. (Not from galleries here: an app's
-- own galleries table may have no created_at, and the migration must still
-- apply; the tracker reads it only where it exists.)

CREATE INDEX ix_gallery_status_list ON edgesync_gallery_status (status, gallery_created_at DESC, gallery_id DESC);

-- +goose Down
DROP INDEX ix_gallery_status_list;
ALTER TABLE edgesync_gallery_status
    DROP COLUMN gallery_created_at,
    DROP COLUMN failed,
    DROP COLUMN migrating;
