-- The pipeline's own bookkeeping: what it last confirmed on its slot (so a
-- lost slot is noticed, DESIGN decision 6) and how far the initial snapshot got
-- (so an interrupted snapshot resumes instead of starting over).

-- +goose Up
CREATE TABLE edgesync_pipeline_state (
    slot              text        PRIMARY KEY,
    confirmed_lsn     pg_lsn,
    snapshot_state    text        NOT NULL DEFAULT 'pending' CHECK (snapshot_state IN ('pending', 'running', 'done')),
    snapshot_table    text,
    snapshot_after    uuid,
    snapshot_edges    bigint      NOT NULL DEFAULT 0,
    slot_created_at   timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE edgesync_pipeline_state;
