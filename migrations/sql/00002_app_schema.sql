-- The reference app schema (CONTRACT section 3.2). Applied only with
-- `edgesync migrate --app-schema`: an existing app brings its own tables and
-- maps them in EDGESYNC_TABLES.

-- +goose Up
CREATE TABLE images (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id   uuid        NOT NULL,
    title      text,
    url        text,
    size_bytes bigint,
    mime_type  text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE videos    (LIKE images INCLUDING ALL);
CREATE TABLE documents (LIKE images INCLUDING ALL);
CREATE TABLE audio     (LIKE images INCLUDING ALL);
CREATE TABLE notes (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id   uuid        NOT NULL,
    title      text,
    body       text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE galleries (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id   uuid        NOT NULL,
    title      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE gallery_items (
    gallery_id  uuid          NOT NULL REFERENCES galleries (id) ON DELETE CASCADE,
    memory_id   uuid          NOT NULL,
    memory_type memory_type_t NOT NULL,
    position    int,
    PRIMARY KEY (gallery_id, memory_id, memory_type)
);
-- Which galleries hold a memory: used when a memory's edges change.
CREATE INDEX ix_gallery_items_memory ON gallery_items (memory_id, memory_type);

-- +goose Down
DROP TABLE gallery_items;
DROP TABLE galleries;
DROP TABLE notes;
DROP TABLE audio;
DROP TABLE documents;
DROP TABLE videos;
DROP TABLE images;
