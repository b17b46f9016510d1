-- The storage edge vocabulary and table (CONTRACT section 3.1).

-- +goose Up
CREATE TYPE artifact_t AS ENUM ('metadata', 'asset');
CREATE TYPE backend_t AS ENUM ('neon-db', 'vercel-blob', 'icp-canister');
CREATE TYPE memory_type_t AS ENUM ('image', 'video', 'note', 'document', 'audio');
CREATE TYPE sync_t AS ENUM ('idle', 'migrating', 'failed');

CREATE TABLE storage_edges (
    id             uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    memory_id      uuid          NOT NULL,
    memory_type    memory_type_t NOT NULL,
    artifact       artifact_t    NOT NULL,
    backend        backend_t     NOT NULL,
    present        boolean       NOT NULL DEFAULT false,
    location       text,
    content_hash   text,
    size_bytes     bigint        CHECK (size_bytes IS NULL OR size_bytes >= 0),
    sync_state     sync_t        NOT NULL DEFAULT 'idle',
    sync_error     text,
    last_synced_at timestamptz,
    created_at     timestamptz   NOT NULL DEFAULT now(),
    updated_at     timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT storage_edges_key UNIQUE (memory_id, memory_type, artifact, backend)
);

-- A deleted edge's change must still say which edge it was (its event needs
-- memory_id, memory_type, artifact and backend).
ALTER TABLE storage_edges REPLICA IDENTITY USING INDEX storage_edges_key;

CREATE INDEX ix_edges_memory ON storage_edges (memory_id, memory_type);
CREATE INDEX ix_edges_backend_present ON storage_edges (backend, artifact, present);
CREATE INDEX ix_edges_sync_state ON storage_edges (sync_state);

-- +goose StatementBegin
CREATE FUNCTION storage_edges_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER storage_edges_updated_at
    BEFORE UPDATE ON storage_edges
    FOR EACH ROW EXECUTE FUNCTION storage_edges_touch_updated_at();

-- +goose Down
DROP TABLE storage_edges;
DROP FUNCTION storage_edges_touch_updated_at();
DROP TYPE sync_t;
DROP TYPE memory_type_t;
DROP TYPE backend_t;
DROP TYPE artifact_t;
