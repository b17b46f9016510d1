-- Reconcile runs (CONTRACT section 6) and the retry bookkeeping of syncs.

-- +goose Up
CREATE TABLE reconcile_runs (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    trigger     text        NOT NULL CHECK (trigger IN ('cli', 'http', 'nats', 'schedule', 'slot_lost', 'startup')),
    dry_run     boolean     NOT NULL DEFAULT false,
    state       text        NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'error')),
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    report      jsonb,
    error       text
);
CREATE INDEX ix_reconcile_runs_started ON reconcile_runs (started_at DESC);

-- One row per (memory, backend) sync that has failed at least once: how many
-- attempts were spent, the last error for a person, and when to try again.
-- The ICP mirror writes it; reconcile reads it for stuck and failed syncs.
CREATE TABLE sync_attempts (
    memory_id       uuid          NOT NULL,
    memory_type     memory_type_t NOT NULL,
    backend         backend_t     NOT NULL,
    attempts        int           NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at timestamptz,
    updated_at      timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (memory_id, memory_type, backend)
);

-- +goose Down
DROP TABLE sync_attempts;
DROP TABLE reconcile_runs;
