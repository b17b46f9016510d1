package api

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgesync/edgesync/domain"
)

// SyncItem is one non-idle edge of GET /api/storage/sync-status.
type SyncItem struct {
	ID             string     `json:"id"`
	MemoryID       string     `json:"memory_id"`
	MemoryType     string     `json:"memory_type"`
	Artifact       string     `json:"artifact"`
	Backend        string     `json:"backend"`
	SyncState      string     `json:"sync_state"`
	SyncError      *string    `json:"sync_error"`
	StateSince     time.Time  `json:"state_since"`
	InStateSeconds float64    `json:"in_state_seconds"`
	LastSyncedAt   *time.Time `json:"last_synced_at"`
	// Attempts is how many upload attempts the memory's sync to this backend
	// has spent (sync_attempts; 0 before the first failure).
	Attempts int `json:"attempts"`
}

type syncCursor struct {
	After string `json:"after"`
}

// syncStatus lists non-idle edges in primary key order. The key never changes,
// so a walk with next_cursor returns no edge twice and skips none of the
// edges that stay non-idle during the walk, however many are inserted or
// updated meanwhile (an edge that turns idle leaves the list; one that turns
// non-idle behind the cursor is seen on the next walk). Ordering by
// updated_at would move updated edges past the cursor and repeat them.
func (s *Server) syncStatus(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, ae := pageLimit(q.Get("limit"), 50, 500)
	if ae != nil {
		writeError(w, ae)
		return
	}
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	nonIdle := []string{domain.SyncMigrating, domain.SyncFailed}
	if v := q.Get("backend"); v != "" {
		if !oneOf(v, backends) {
			writeError(w, enumError("backend", v, backends))
			return
		}
		where = append(where, "backend = "+arg(v)+"::backend_t")
	}
	if v := q.Get("memory_type"); v != "" {
		if !oneOf(v, memoryTypes) {
			writeError(w, enumError("memory_type", v, memoryTypes))
			return
		}
		where = append(where, "memory_type = "+arg(v)+"::memory_type_t")
	}
	// Counts honour backend and memory_type but not state: they say how the
	// non-idle edges split, whichever state the page shows.
	countWhere := append([]string{"sync_state <> 'idle'"}, where...)
	countArgs := append([]any(nil), args...)
	if v := q.Get("state"); v != "" {
		if !oneOf(v, nonIdle) {
			writeError(w, enumError("state", v, nonIdle))
			return
		}
		where = append(where, "sync_state = "+arg(v)+"::sync_t")
	}
	if c := q.Get("cursor"); c != "" {
		var cur syncCursor
		if ae := decodeCursor(c, &cur); ae != nil {
			writeError(w, ae)
			return
		}
		if !domain.CanonicalUUID(cur.After) {
			writeError(w, badRequest("cursor is malformed: pass next_cursor from the previous page unchanged"))
			return
		}
		where = append(where, "id > "+arg(cur.After)+"::uuid")
	}
	listSQL := `SELECT id, memory_id, memory_type, artifact, backend, sync_state, sync_error, updated_at,
			extract(epoch FROM now() - updated_at)::float8, last_synced_at,
			coalesce((SELECT sa.attempts FROM sync_attempts sa WHERE sa.memory_id = storage_edges.memory_id
				AND sa.memory_type = storage_edges.memory_type AND sa.backend = storage_edges.backend), 0)
		FROM storage_edges
		WHERE ` + strings.Join(append([]string{"sync_state <> 'idle'"}, where...), " AND ") + `
		ORDER BY id LIMIT ` + arg(limit+1)
	countSQL := `SELECT sync_state::text, count(*) FROM storage_edges WHERE ` + strings.Join(countWhere, " AND ") + ` GROUP BY 1`

	batch := &pgx.Batch{}
	batch.Queue(listSQL, args...)
	batch.Queue(countSQL, countArgs...)
	br := s.pool.SendBatch(r.Context(), batch)
	defer br.Close()
	rows, err := br.Query()
	if err != nil {
		s.fail(w, r, fmt.Errorf("sync status: %w", err))
		return
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (SyncItem, error) {
		var it SyncItem
		err := row.Scan(&it.ID, &it.MemoryID, &it.MemoryType, &it.Artifact, &it.Backend, &it.SyncState, &it.SyncError,
			&it.StateSince, &it.InStateSeconds, &it.LastSyncedAt, &it.Attempts)
		return it, err
	})
	if err != nil {
		s.fail(w, r, fmt.Errorf("sync status: %w", err))
		return
	}
	counts := map[string]int64{domain.SyncMigrating: 0, domain.SyncFailed: 0}
	rows, err = br.Query()
	if err != nil {
		s.fail(w, r, fmt.Errorf("sync counts: %w", err))
		return
	}
	var state string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&state, &n}, func() error { counts[state] = n; return nil }); err != nil {
		s.fail(w, r, fmt.Errorf("sync counts: %w", err))
		return
	}
	var next *string
	if len(items) > limit {
		items = items[:limit]
		c := encodeCursor(syncCursor{After: items[len(items)-1].ID})
		next = &c
	}
	if items == nil {
		items = []SyncItem{}
	}
	writeJSON(w, http.StatusOK, struct {
		Items      []SyncItem       `json:"items"`
		Counts     map[string]int64 `json:"counts"`
		NextCursor *string          `json:"next_cursor"`
	}{items, counts, next})
}
