-- The reference app schema's index for GET /api/galleries without a status
-- filter: it walks galleries newest first (created_at DESC, id DESC), a range
-- scan of this index per page. Applied only with --app-schema, like 00002; an
-- app that brings its own galleries table should create the same index (the
-- list still answers without it, by sorting every gallery for each page). It
-- sits below 00010 so that `migrate down` without --app-schema can still roll
-- back that core step.

-- +goose Up
CREATE INDEX ix_galleries_created ON galleries (created_at DESC, id DESC);

-- +goose Down
DROP INDEX ix_galleries_created;
