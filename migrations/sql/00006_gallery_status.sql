-- State of the gallery status tracker (internal/gallerystatus) and a partial
-- index for the sync-status API.

-- +goose Up
-- The last status the tracker published per gallery. version numbers the
-- gallery's status events: the event of a change carries the msg id
-- gallery/<id>/<version>, and the row is written only after the publish, so a
-- crash in between republishes the same id and JetStream drops the duplicate.
CREATE TABLE edgesync_gallery_status (
    gallery_id            uuid        PRIMARY KEY,
    status                text        NOT NULL CHECK (status IN ('empty', 'web2_only', 'partial', 'stored_forever')),
    total_memories        int         NOT NULL,
    icp_complete_memories int         NOT NULL,
    icp_any               boolean     NOT NULL,
    version               bigint      NOT NULL,
    changed_at            timestamptz NOT NULL DEFAULT now(),
    checked_at            timestamptz NOT NULL DEFAULT now()
);

-- When gallery_presence_mv was last refreshed (the snapshot time of the
-- refresh), so readers can say how stale the counts they serve are.
CREATE TABLE edgesync_mv_refresh (
    name         text        PRIMARY KEY,
    refreshed_at timestamptz NOT NULL,
    duration_ms  bigint      NOT NULL
);

-- GET /api/storage/sync-status walks the non-idle edges in id order; this
-- keeps that walk an index range scan however many idle edges there are.
CREATE INDEX ix_edges_not_idle ON storage_edges (id) WHERE sync_state <> 'idle';

-- +goose Down
DROP INDEX ix_edges_not_idle;
DROP TABLE edgesync_mv_refresh;
DROP TABLE edgesync_gallery_status;
