-- Presence and sync views (CONTRACT section 3.1). gallery_presence reads the
-- app's galleries and gallery_items tables, which must exist by now (the app's
-- own, or the reference schema of --app-schema).

-- +goose Up
CREATE VIEW memory_presence AS
SELECT e.memory_id,
       e.memory_type,
       bool_or(e.artifact = 'metadata' AND e.backend = 'neon-db' AND e.present)          AS meta_neon,
       bool_or(e.artifact = 'asset' AND e.backend = 'vercel-blob' AND e.present)         AS asset_blob,
       bool_or(e.artifact = 'metadata' AND e.backend = 'icp-canister' AND e.present)     AS meta_icp,
       bool_or(e.artifact = 'asset' AND e.backend = 'icp-canister' AND e.present)        AS asset_icp,
       -- metadata on ICP, and the asset too wherever the memory has an asset:
       -- one present on any backend, or one being (or having been) put on ICP.
       -- A blob edge left not present after its URL was cleared is no asset.
       bool_or(e.artifact = 'metadata' AND e.backend = 'icp-canister' AND e.present)
         AND (NOT bool_or(e.artifact = 'asset' AND (e.present OR e.backend = 'icp-canister'))
              OR bool_or(e.artifact = 'asset' AND e.backend = 'icp-canister' AND e.present)) AS icp_complete
FROM storage_edges e
GROUP BY e.memory_id, e.memory_type;

-- Written with LATERAL joins so a lookup of one gallery reads only that
-- gallery's items and their edges through ix_edges_memory.
CREATE VIEW gallery_presence AS
SELECT g.id                                   AS gallery_id,
       s.total_memories,
       s.icp_complete_memories,
       (s.total_memories > 0 AND s.icp_complete_memories = s.total_memories) AS icp_complete,
       s.icp_any,
       CASE
           WHEN s.total_memories = 0 THEN 'empty'
           WHEN s.icp_complete_memories = s.total_memories THEN 'stored_forever'
           WHEN s.icp_any THEN 'partial'
           ELSE 'web2_only'
       END                                    AS status
FROM galleries g
CROSS JOIN LATERAL (
    SELECT count(*)::int                                   AS total_memories,
           count(*) FILTER (WHERE p.icp_complete)::int     AS icp_complete_memories,
           coalesce(bool_or(p.meta_icp OR p.asset_icp), false) AS icp_any
    FROM gallery_items gi
    LEFT JOIN LATERAL (
        SELECT bool_or(e.artifact = 'metadata' AND e.backend = 'icp-canister' AND e.present) AS meta_icp,
               bool_or(e.artifact = 'asset' AND e.backend = 'icp-canister' AND e.present)    AS asset_icp,
               bool_or(e.artifact = 'metadata' AND e.backend = 'icp-canister' AND e.present)
                 AND (NOT bool_or(e.artifact = 'asset' AND (e.present OR e.backend = 'icp-canister'))
                      OR bool_or(e.artifact = 'asset' AND e.backend = 'icp-canister' AND e.present)) AS icp_complete
        FROM storage_edges e
        WHERE e.memory_id = gi.memory_id AND e.memory_type = gi.memory_type
    ) p ON true
    WHERE gi.gallery_id = g.id
) s;

CREATE VIEW sync_status AS
SELECT e.id,
       e.memory_id,
       e.memory_type,
       e.artifact,
       e.backend,
       e.sync_state,
       e.sync_error,
       e.updated_at               AS state_since,
       now() - e.updated_at       AS in_state_for,
       e.last_synced_at
FROM storage_edges e
WHERE e.sync_state <> 'idle';

CREATE MATERIALIZED VIEW gallery_presence_mv AS
SELECT gallery_id, total_memories, icp_complete_memories, icp_complete, icp_any, status
FROM gallery_presence
WITH DATA;

CREATE UNIQUE INDEX ux_gallery_presence_mv_gallery ON gallery_presence_mv (gallery_id);

-- +goose StatementBegin
CREATE FUNCTION refresh_gallery_presence() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    REFRESH MATERIALIZED VIEW CONCURRENTLY gallery_presence_mv;
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION refresh_gallery_presence();
DROP MATERIALIZED VIEW gallery_presence_mv;
DROP VIEW sync_status;
DROP VIEW gallery_presence;
DROP VIEW memory_presence;
