package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/internal/presencecache"
)

// GalleryCounts is a gallery's row of gallery_presence, with where it came
// from: "tracker" (edgesync_gallery_status, kept by the gallery status tracker
// within its debounce of every change), "mv" (gallery_presence_mv, refreshed
// at most every MVRefreshEvery after changes) or "live" (the gallery_presence
// view, computed now). AsOf is when the figures were computed, null for live.
// An answer from the presence cache says "memory", with AsOf when it was read
// from Postgres; CountsSource and CountsAsOf always say where the figures
// came from at that read.
type GalleryCounts struct {
	GalleryID           string     `json:"gallery_id"`
	TotalMemories       int        `json:"total_memories"`
	ICPCompleteMemories int        `json:"icp_complete_memories"`
	ICPComplete         bool       `json:"icp_complete"`
	ICPAny              bool       `json:"icp_any"`
	Status              string     `json:"status"`
	Source              string     `json:"source"`
	AsOf                *time.Time `json:"as_of"`
	CountsSource        string     `json:"counts_source"`
	CountsAsOf          *time.Time `json:"counts_as_of"`
}

// Presence is the presence of one memory (the columns of memory_presence).
type Presence struct {
	MetaNeon    bool `json:"meta_neon"`
	AssetBlob   bool `json:"asset_blob"`
	MetaICP     bool `json:"meta_icp"`
	AssetICP    bool `json:"asset_icp"`
	ICPComplete bool `json:"icp_complete"`
}

// GalleryMemory is one item of a gallery with its presence. SyncState sums up
// its edges: failed if any edge failed, else migrating if any is migrating,
// else idle.
type GalleryMemory struct {
	MemoryID   string `json:"memory_id"`
	MemoryType string `json:"memory_type"`
	Position   *int32 `json:"position"`
	Presence
	SyncState string `json:"sync_state"`
}

type galleryCursor struct {
	MemoryID   string `json:"m"`
	MemoryType string `json:"t"`
}

// galleryCountsSQL prefers the tracker's row, then the MV, then the live
// view. The later branches are gated by NOT EXISTS on the earlier ones, which
// Postgres evaluates once up front (a one-time filter), so the live
// computation, tens of milliseconds on a 10,000-item gallery, only runs for
// galleries neither of the others knows yet (or with fresh=true).
const galleryCountsSQL = `
WITH t AS (
	SELECT 'tracker'::text AS source, s.total_memories, s.icp_complete_memories,
	       (s.total_memories > 0 AND s.icp_complete_memories = s.total_memories) AS icp_complete,
	       s.icp_any, s.status, s.checked_at AS as_of
	FROM edgesync_gallery_status s
	WHERE s.gallery_id = $1 AND NOT $2 AND EXISTS (SELECT 1 FROM galleries g WHERE g.id = $1)
), m AS (
	SELECT 'mv'::text AS source, mv.total_memories, mv.icp_complete_memories, mv.icp_complete, mv.icp_any, mv.status,
	       (SELECT r.refreshed_at FROM edgesync_mv_refresh r WHERE r.name = 'gallery_presence_mv') AS as_of
	FROM gallery_presence_mv mv
	WHERE mv.gallery_id = $1 AND NOT $2 AND EXISTS (SELECT 1 FROM galleries g WHERE g.id = $1)
)
SELECT * FROM t
UNION ALL
SELECT * FROM m WHERE NOT EXISTS (SELECT 1 FROM t)
UNION ALL
SELECT 'live', gp.total_memories, gp.icp_complete_memories, gp.icp_complete, gp.icp_any, gp.status, NULL::timestamptz
FROM gallery_presence gp
WHERE gp.gallery_id = $1 AND NOT EXISTS (SELECT 1 FROM t) AND NOT EXISTS (SELECT 1 FROM m)`

// galleryItemsSQL reads one page of items in primary key order (an index
// range scan), each item's presence from memory_presence (the one place the
// icp_complete rule is written) and the sum of its sync states from its
// edges. OFFSET 0 keeps the view's subquery from being pulled up into a join,
// so the item's keys are pushed into the view and it reads only that memory's
// edges through ix_edges_memory, as gallery_presence does (migration 00007).
// The sync state reads the item's edges through the same index; a condition
// on sync_state there would let the planner walk ix_edges_not_idle (every
// non-idle edge) once per item instead.
const galleryItemsSQL = `
SELECT gi.memory_id, gi.memory_type, gi.position,
       coalesce(p.meta_neon, false), coalesce(p.asset_blob, false), coalesce(p.meta_icp, false),
       coalesce(p.asset_icp, false), coalesce(p.icp_complete, false),
       CASE WHEN ss.failed THEN 'failed' WHEN ss.migrating THEN 'migrating' ELSE 'idle' END
FROM gallery_items gi
LEFT JOIN LATERAL (
	SELECT mp.meta_neon, mp.asset_blob, mp.meta_icp, mp.asset_icp, mp.icp_complete
	FROM memory_presence mp
	WHERE mp.memory_id = gi.memory_id AND mp.memory_type = gi.memory_type
	OFFSET 0 -- a fence: pulled up, the view would be aggregated whole
) p ON true
LEFT JOIN LATERAL (
	SELECT bool_or(e.sync_state = 'failed') AS failed, bool_or(e.sync_state = 'migrating') AS migrating
	FROM storage_edges e
	WHERE e.memory_id = gi.memory_id AND e.memory_type = gi.memory_type
) ss ON true
WHERE gi.gallery_id = $1
%s
ORDER BY gi.memory_id, gi.memory_type
LIMIT $2`

// Two statements rather than one with "$2 IS NULL OR ...": the OR would keep
// the planner from turning the cursor into an index range bound.
var (
	galleryFirstPageSQL = fmt.Sprintf(galleryItemsSQL, "")
	galleryNextPageSQL  = fmt.Sprintf(galleryItemsSQL, "  AND (gi.memory_id, gi.memory_type) > ($3::uuid, $4::memory_type_t)")
)

func (s *Server) galleryPresence(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !domain.CanonicalUUID(id) {
		writeError(w, uuidError("gallery id", id))
		return
	}
	q := r.URL.Query()
	limit, ae := pageLimit(q.Get("limit"), 50, 500)
	if ae != nil {
		writeError(w, ae)
		return
	}
	var after *galleryCursor
	if c := q.Get("cursor"); c != "" {
		after = new(galleryCursor)
		if ae := decodeCursor(c, after); ae != nil {
			writeError(w, ae)
			return
		}
		if !domain.CanonicalUUID(after.MemoryID) || !oneOf(after.MemoryType, memoryTypes) {
			writeError(w, badRequest("cursor is malformed: pass next_cursor from the previous page unchanged"))
			return
		}
	}
	fresh := false
	if v := q.Get("fresh"); v != "" {
		var err error
		if fresh, err = strconv.ParseBool(v); err != nil {
			writeError(w, badRequest("fresh must be true or false"))
			return
		}
	}
	if after == nil && !fresh && s.cachedGallery(w, r, id, limit) {
		return
	}
	page, _, err := s.readGallery(r.Context(), id, limit, after, fresh, 0)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// galleryPage is the answer of GET /api/galleries/{id}/presence.
type galleryPage struct {
	Gallery    GalleryCounts   `json:"gallery"`
	Memories   []GalleryMemory `json:"memories"`
	NextCursor *string         `json:"next_cursor"`
}

// galleryMembersSQL lists a gallery's members for the presence cache's
// index, in primary key order (so two reads of the same membership compare
// equal), at most $2 of them.
const galleryMembersSQL = `SELECT memory_id, memory_type::text FROM gallery_items WHERE gallery_id = $1
ORDER BY memory_id, memory_type LIMIT $2`

// readGallery reads one page of a gallery from Postgres; with members > 0
// it also lists up to members+1 of the gallery's memories (for the presence
// cache).
func (s *Server) readGallery(ctx context.Context, id string, limit int, after *galleryCursor, fresh bool, members int) (galleryPage, []presencecache.Member, error) {
	batch := &pgx.Batch{}
	batch.Queue(galleryCountsSQL, id, fresh)
	if after == nil {
		batch.Queue(galleryFirstPageSQL, id, limit+1)
	} else {
		batch.Queue(galleryNextPageSQL, id, limit+1, after.MemoryID, after.MemoryType)
	}
	if members > 0 {
		batch.Queue(galleryMembersSQL, id, members+1)
	}
	br := s.pool.SendBatch(ctx, batch)
	defer br.Close()

	g := GalleryCounts{GalleryID: id}
	err := br.QueryRow().Scan(&g.Source, &g.TotalMemories, &g.ICPCompleteMemories, &g.ICPComplete, &g.ICPAny, &g.Status, &g.AsOf)
	if errors.Is(err, pgx.ErrNoRows) {
		return galleryPage{}, nil, notFound("gallery " + id + " does not exist")
	}
	if err != nil {
		return galleryPage{}, nil, fmt.Errorf("gallery counts: %w", err)
	}
	g.CountsSource, g.CountsAsOf = g.Source, g.AsOf
	rows, err := br.Query()
	if err != nil {
		return galleryPage{}, nil, fmt.Errorf("gallery items: %w", err)
	}
	items := make([]GalleryMemory, 0, limit+1)
	for rows.Next() {
		var m GalleryMemory
		if err := rows.Scan(&m.MemoryID, &m.MemoryType, &m.Position, &m.MetaNeon, &m.AssetBlob, &m.MetaICP,
			&m.AssetICP, &m.ICPComplete, &m.SyncState); err != nil {
			rows.Close()
			return galleryPage{}, nil, fmt.Errorf("scan gallery item: %w", err)
		}
		items = append(items, m)
	}
	if err := rows.Err(); err != nil {
		return galleryPage{}, nil, fmt.Errorf("gallery items: %w", err)
	}
	var ms []presencecache.Member
	if members > 0 {
		rows, err := br.Query()
		if err != nil {
			return galleryPage{}, nil, fmt.Errorf("gallery members: %w", err)
		}
		var m presencecache.Member
		if _, err := pgx.ForEachRow(rows, []any{&m.ID, &m.Type}, func() error {
			ms = append(ms, m)
			return nil
		}); err != nil {
			return galleryPage{}, nil, fmt.Errorf("gallery members: %w", err)
		}
	}
	var next *string
	if len(items) > limit {
		items = items[:limit]
		last := items[len(items)-1]
		c := encodeCursor(galleryCursor{MemoryID: last.MemoryID, MemoryType: last.MemoryType})
		next = &c
	}
	return galleryPage{Gallery: g, Memories: items, NextCursor: next}, ms, nil
}

// memoryAnswer is the answer of GET /api/memories/{type}/{id}/presence.
// Source is "live" (read now) or "memory" (the presence cache, read from
// Postgres at AsOf).
type memoryAnswer struct {
	MemoryID   string     `json:"memory_id"`
	MemoryType string     `json:"memory_type"`
	Exists     bool       `json:"exists"`
	Presence   Presence   `json:"presence"`
	Edges      []Edge     `json:"edges"`
	Source     string     `json:"source"`
	AsOf       *time.Time `json:"as_of"`
}

func (s *Server) memoryPresence(w http.ResponseWriter, r *http.Request) {
	typ, id, ok := memoryPath(w, r)
	if !ok {
		return
	}
	if s.cachedMemory(w, r, typ, id) {
		return
	}
	a, err := s.readMemory(r.Context(), typ, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

func (s *Server) readMemory(ctx context.Context, typ, id string) (memoryAnswer, error) {
	batch := &pgx.Batch{}
	batch.Queue(`SELECT `+edgeColumns+` FROM storage_edges WHERE memory_id = $1 AND memory_type = $2::memory_type_t
		ORDER BY artifact, backend`, id, typ)
	batch.Queue(`SELECT meta_neon, asset_blob, meta_icp, asset_icp, icp_complete FROM memory_presence
		WHERE memory_id = $1 AND memory_type = $2::memory_type_t`, id, typ)
	t, mapped := s.table(typ)
	if mapped {
		batch.Queue(`SELECT EXISTS (SELECT 1 FROM `+t.Ident()+` WHERE id = $1::uuid)`, id)
	}
	br := s.pool.SendBatch(ctx, batch)
	defer br.Close()
	rows, err := br.Query()
	if err != nil {
		return memoryAnswer{}, fmt.Errorf("memory edges: %w", err)
	}
	edges, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Edge, error) { return scanEdge(row) })
	if err != nil {
		return memoryAnswer{}, fmt.Errorf("memory edges: %w", err)
	}
	// No edges, no presence row: every flag stays false.
	var p Presence
	err = br.QueryRow().Scan(&p.MetaNeon, &p.AssetBlob, &p.MetaICP, &p.AssetICP, &p.ICPComplete)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return memoryAnswer{}, fmt.Errorf("memory presence: %w", err)
	}
	exists := false
	if mapped {
		if err := br.QueryRow().Scan(&exists); err != nil {
			return memoryAnswer{}, fmt.Errorf("memory row: %w", err)
		}
	}
	if !exists && len(edges) == 0 {
		return memoryAnswer{}, notFound(typ + " " + id + " does not exist and has no edges")
	}
	return memoryAnswer{MemoryID: id, MemoryType: typ, Exists: exists, Presence: p, Edges: edges, Source: "live"}, nil
}

// memoryPath validates the {type} and {id} of a memory route, answering 400
// itself when they are bad.
func memoryPath(w http.ResponseWriter, r *http.Request) (typ, id string, ok bool) {
	typ, id = r.PathValue("type"), r.PathValue("id")
	if !oneOf(typ, memoryTypes) {
		writeError(w, enumError("memory type", typ, memoryTypes))
		return "", "", false
	}
	if !domain.CanonicalUUID(id) {
		writeError(w, uuidError("memory id", id))
		return "", "", false
	}
	return typ, id, true
}
