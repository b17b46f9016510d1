package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/internal/gallerystatus"
)

// GalleryItem is one gallery of GET /api/galleries and of the bulk presence
// read: the gallery's row, its counts and status (from Source, as in
// GalleryCounts), and how many of its items have an edge migrating or failed.
type GalleryItem struct {
	GalleryID           string     `json:"gallery_id"`
	Title               *string    `json:"title"`
	OwnerID             string     `json:"owner_id"`
	CreatedAt           time.Time  `json:"created_at"`
	TotalMemories       int        `json:"total_memories"`
	ICPCompleteMemories int        `json:"icp_complete_memories"`
	ICPComplete         bool       `json:"icp_complete"`
	ICPAny              bool       `json:"icp_any"`
	Migrating           int        `json:"migrating"`
	Failed              int        `json:"failed"`
	Status              string     `json:"status"`
	Source              string     `json:"source"`
	AsOf                *time.Time `json:"as_of"`
}

// galleryStatuses are the values of gallery_presence.status.
var galleryStatuses = []string{"empty", "web2_only", "partial", "stored_forever"}

const (
	galleryListMax     = 200 // GET /api/galleries?limit=
	galleryBulkMax     = 100 // GET /api/galleries/presence?ids=
	galleryTitleMaxLen = 200 // GET /api/galleries?q=
)

// galleryItemColumns are the columns every gallery query selects, in
// scanGalleryItem's order; c is one of the count sources below.
const galleryItemColumns = `g.id::text, g.title, g.owner_id::text, g.created_at,
	c.source, c.total_memories, c.icp_complete_memories, c.icp_complete, c.icp_any, c.migrating, c.failed, c.status, c.as_of`

// galleryCountsLateral gives gallery g its counts as the presence endpoint
// does: the tracker's row, else the MV's, else the live view. LIMIT 1 over
// the UNION ALL stops at the first branch that has a row (an Append runs its
// branches in order), so a gallery the tracker knows costs one index probe;
// the NOT EXISTS guards keep the answer right whatever the order. Only the MV
// and live branches count migrating and failed items now (the tracker's row
// has them), from the gallery's non-idle edges.
var galleryCountsLateral = `
CROSS JOIN LATERAL (
	SELECT 'tracker'::text AS source, s.total_memories, s.icp_complete_memories,
	       (s.total_memories > 0 AND s.icp_complete_memories = s.total_memories) AS icp_complete,
	       s.icp_any, s.migrating, s.failed, s.status, s.checked_at AS as_of
	FROM edgesync_gallery_status s
	WHERE s.gallery_id = g.id
	UNION ALL
	SELECT 'mv', gp.total_memories, gp.icp_complete_memories, gp.icp_complete, gp.icp_any, sc.migrating, sc.failed, gp.status,
	       (SELECT r.refreshed_at FROM edgesync_mv_refresh r WHERE r.name = 'gallery_presence_mv')
	FROM gallery_presence_mv gp
	CROSS JOIN LATERAL (` + gallerystatus.SyncCountsSQL + `) sc
	WHERE gp.gallery_id = g.id AND NOT EXISTS (SELECT 1 FROM edgesync_gallery_status s WHERE s.gallery_id = g.id)
	UNION ALL
	SELECT 'live', gp.total_memories, gp.icp_complete_memories, gp.icp_complete, gp.icp_any, sc.migrating, sc.failed, gp.status,
	       NULL::timestamptz
	FROM gallery_presence gp
	CROSS JOIN LATERAL (` + gallerystatus.SyncCountsSQL + `) sc
	WHERE gp.gallery_id = g.id AND NOT EXISTS (SELECT 1 FROM edgesync_gallery_status s WHERE s.gallery_id = g.id)
	  AND NOT EXISTS (SELECT 1 FROM gallery_presence_mv mv WHERE mv.gallery_id = g.id)
	LIMIT 1
) c`

// galleryByStatusFrom drives a status-filtered list from the tracker's rows
// through ix_gallery_status_list (status, gallery_created_at DESC,
// gallery_id DESC): a range scan in the list's order, whatever the number of
// galleries. c is the tracker's row itself.
const galleryByStatusFrom = `
FROM (
	SELECT 'tracker'::text AS source, s.gallery_id, s.gallery_created_at, s.total_memories, s.icp_complete_memories,
	       (s.total_memories > 0 AND s.icp_complete_memories = s.total_memories) AS icp_complete,
	       s.icp_any, s.migrating, s.failed, s.status, s.checked_at AS as_of
	FROM edgesync_gallery_status s
) c
JOIN galleries g ON g.id = c.gallery_id`

type galleryListCursor struct {
	CreatedAt string `json:"t"` // RFC 3339 with nanoseconds: exact to Postgres' microsecond
	ID        string `json:"i"`
}

func scanGalleryItem(row pgx.Row, extra ...any) (GalleryItem, error) {
	var it GalleryItem
	err := row.Scan(append([]any{&it.GalleryID, &it.Title, &it.OwnerID, &it.CreatedAt, &it.Source, &it.TotalMemories,
		&it.ICPCompleteMemories, &it.ICPComplete, &it.ICPAny, &it.Migrating, &it.Failed, &it.Status, &it.AsOf}, extra...)...)
	it.CreatedAt = it.CreatedAt.UTC()
	if it.AsOf != nil {
		t := it.AsOf.UTC()
		it.AsOf = &t
	}
	return it, err
}

// galleryColumnsError says what to do when the app's galleries table lacks
// a column these routes read (edgesync itself needs only id; the reference
// schema has them all), instead of an anonymous 500.
func galleryColumnsError(err error) error {
	var pge *pgconn.PgError
	if errors.As(err, &pge) && pge.Code == "42703" /* undefined_column */ {
		return &apiError{Status: http.StatusInternalServerError, Code: "internal",
			Message: "the galleries table lacks a column this route reads (" + pge.Message +
				"): it needs id, title, owner_id and created_at, as in the reference app schema"}
	}
	return err
}

// likeContains is a case-insensitive substring pattern for ILIKE ... ESCAPE
// '\' that matches s literally (its %, _ and \ escaped).
func likeContains(s string) string {
	return "%" + strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s) + "%"
}

// listGalleries serves GET /api/galleries: newest first (created_at DESC, id
// DESC), keyset-paginated on that immutable pair, so a walk returns no gallery
// twice and skips none that exists throughout, however many are inserted
// meanwhile.
//
// Without status it walks galleries (ix_galleries_created) with each one's
// counts from the tracker, MV or live view. With status it walks the
// tracker's rows (ix_gallery_status_list): a gallery is listed by status once
// the tracker has recorded it (see docs/api.md).
func (s *Server) listGalleries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, ae := pageLimit(q.Get("limit"), 50, galleryListMax)
	if ae != nil {
		writeError(w, ae)
		return
	}
	status := q.Get("status")
	if status != "" && !oneOf(status, galleryStatuses) {
		writeError(w, enumError("status", status, galleryStatuses))
		return
	}
	title := q.Get("q")
	if len(title) > galleryTitleMaxLen {
		writeError(w, badRequest("q must be at most "+strconv.Itoa(galleryTitleMaxLen)+" bytes"))
		return
	}
	var after *galleryListCursor
	var afterAt time.Time
	if c := q.Get("cursor"); c != "" {
		after = new(galleryListCursor)
		if ae := decodeCursor(c, after); ae != nil {
			writeError(w, ae)
			return
		}
		var err error
		afterAt, err = time.Parse(time.RFC3339Nano, after.CreatedAt)
		if err != nil || !domain.CanonicalUUID(after.ID) {
			writeError(w, badRequest("cursor is malformed: pass next_cursor from the previous page unchanged"))
			return
		}
	}

	var afterID string
	if after != nil {
		afterID = after.ID
	}
	sql, args := galleryListQuery(status, title, afterAt, afterID, limit+1)
	rows, err := s.pool.Query(r.Context(), sql, args...)
	if err != nil {
		s.fail(w, r, galleryColumnsError(fmt.Errorf("list galleries: %w", err)))
		return
	}
	type keyed struct {
		GalleryItem
		sortAt time.Time
	}
	page, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (keyed, error) {
		var k keyed
		var err error
		k.GalleryItem, err = scanGalleryItem(row, &k.sortAt)
		return k, err
	})
	if err != nil {
		s.fail(w, r, galleryColumnsError(fmt.Errorf("list galleries: %w", err)))
		return
	}
	var next *string
	if len(page) > limit {
		page = page[:limit]
		last := page[len(page)-1]
		c := encodeCursor(galleryListCursor{CreatedAt: last.sortAt.UTC().Format(time.RFC3339Nano), ID: last.GalleryID})
		next = &c
	}
	items := make([]GalleryItem, len(page))
	for i, k := range page {
		items[i] = k.GalleryItem
	}
	writeJSON(w, http.StatusOK, struct {
		Galleries  []GalleryItem `json:"galleries"`
		NextCursor *string       `json:"next_cursor"`
	}{items, next})
}

// galleryListQuery builds the list's statement; afterID "" is the first
// page. Every value is a parameter.
func galleryListQuery(status, title string, afterAt time.Time, afterID string, limit int) (string, []any) {
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	var from, sortAt, sortID string
	where := []string{"true"}
	if status == "" {
		from, sortAt, sortID = "FROM galleries g"+galleryCountsLateral, "g.created_at", "g.id"
	} else {
		from, sortAt, sortID = galleryByStatusFrom, "c.gallery_created_at", "c.gallery_id"
		where = append(where, "c.status = "+arg(status), "c.gallery_created_at IS NOT NULL")
	}
	if afterID != "" {
		where = append(where, "("+sortAt+", "+sortID+") < ("+arg(afterAt)+"::timestamptz, "+arg(afterID)+"::uuid)")
	}
	if title != "" {
		where = append(where, `g.title ILIKE `+arg(likeContains(title))+` ESCAPE '\'`)
	}
	sql := "SELECT " + galleryItemColumns + ", " + sortAt + "\n" + from + "\nWHERE " + strings.Join(where, " AND ") +
		"\nORDER BY " + sortAt + " DESC, " + sortID + " DESC\nLIMIT " + arg(limit)
	return sql, args
}

// galleriesPresence serves GET /api/galleries/presence?ids=: the list item of
// each given gallery in one request (an app's page of galleries), in the
// order asked, and the ids that are no gallery.
func (s *Server) galleriesPresence(w http.ResponseWriter, r *http.Request) {
	ids, ae := galleryIDs(r.URL.Query()["ids"])
	if ae != nil {
		writeError(w, ae)
		return
	}
	rows, err := s.pool.Query(r.Context(), `SELECT `+galleryItemColumns+`
		FROM unnest($1::uuid[]) WITH ORDINALITY AS k(id, ord)
		JOIN galleries g ON g.id = k.id`+galleryCountsLateral+`
		ORDER BY k.ord`, ids)
	if err != nil {
		s.fail(w, r, galleryColumnsError(fmt.Errorf("galleries presence: %w", err)))
		return
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (GalleryItem, error) { return scanGalleryItem(row) })
	if err != nil {
		s.fail(w, r, galleryColumnsError(fmt.Errorf("galleries presence: %w", err)))
		return
	}
	found := make(map[string]bool, len(items))
	for _, it := range items {
		found[it.GalleryID] = true
	}
	missing := []string{}
	for _, id := range ids {
		if !found[id] {
			missing = append(missing, id)
		}
	}
	writeJSON(w, http.StatusOK, struct {
		Galleries []GalleryItem `json:"galleries"`
		Missing   []string      `json:"missing"`
	}{items, missing})
}

// galleryIDs parses ?ids= (comma-separated, the parameter may repeat): 1 to
// galleryBulkMax canonical UUIDs; repeats are answered once.
func galleryIDs(vals []string) ([]string, *apiError) {
	var ids []string
	seen := map[string]bool{}
	for _, v := range vals {
		for _, id := range strings.Split(v, ",") {
			if !domain.CanonicalUUID(id) {
				return nil, uuidError("ids: gallery id", id)
			}
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
			if len(ids) > galleryBulkMax {
				return nil, badRequest("ids lists more than " + strconv.Itoa(galleryBulkMax) + " galleries: ask in pages of at most " + strconv.Itoa(galleryBulkMax))
			}
		}
	}
	if len(ids) == 0 {
		return nil, badRequest("ids is required: 1 to " + strconv.Itoa(galleryBulkMax) + " comma-separated gallery ids")
	}
	return ids, nil
}
