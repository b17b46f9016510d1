-- Failed ICP syncs heal by themselves: after a mirror job spends its attempts (one round), the
-- mirror schedules the next round in next_attempt_at (EDGESYNC_ICP_RETRY_BASE, doubling per round,
-- capped at 24 h) and reconcile re-queues the memory when that time has come. rounds counts the
-- rounds spent; after the last one next_attempt_at stays NULL and the sync_error says what to do.

-- +goose Up
ALTER TABLE sync_attempts ADD COLUMN rounds int NOT NULL DEFAULT 0;
CREATE INDEX ix_sync_attempts_due ON sync_attempts (next_attempt_at) WHERE next_attempt_at IS NOT NULL;

-- +goose Down
DROP INDEX ix_sync_attempts_due;
ALTER TABLE sync_attempts DROP COLUMN rounds;
