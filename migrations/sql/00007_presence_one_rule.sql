-- The icp_complete rule is written once, in memory_presence: gallery_presence
-- (and so gallery_presence_mv, which selects from it) builds on that view
-- instead of repeating the rule over storage_edges. CREATE OR REPLACE keeps
-- the columns and the dependent MV.
--
-- OFFSET 0 keeps the LATERAL subquery a subquery: without it Postgres pulls
-- it up into a plain join against memory_presence, which it can only answer
-- by aggregating every memory's edges (a whole-table GroupAggregate per
-- gallery). As a subquery, its conditions on the view's grouping columns are
-- pushed into the view, so each item reads only its own edges through
-- ix_edges_memory (migrations_test checks the plan).

-- +goose Up
CREATE OR REPLACE VIEW gallery_presence AS
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
        SELECT mp.meta_icp, mp.asset_icp, mp.icp_complete
        FROM memory_presence mp
        WHERE mp.memory_id = gi.memory_id AND mp.memory_type = gi.memory_type
        OFFSET 0
    ) p ON true
    WHERE gi.gallery_id = g.id
) s;

-- +goose Down
CREATE OR REPLACE VIEW gallery_presence AS
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
