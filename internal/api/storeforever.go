package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"

	"github.com/jackc/pgx/v5"

	"github.com/edgesync/edgesync/domain"
)

// Queued is one memory whose icp-canister edges a store-forever request set
// to migrating, with the artifacts it queued.
type Queued struct {
	MemoryID   string   `json:"memory_id"`
	MemoryType string   `json:"memory_type"`
	Artifacts  []string `json:"artifacts"`
}

// storeForeverResult is the 202 answer. Already counts the memories for which
// nothing new was queued: every artifact already present on ICP (and idle) or
// already migrating.
type storeForeverResult struct {
	Queued  []Queued `json:"queued"`
	Already int      `json:"already"`
}

// storeForeverSQL upserts the icp-canister edges of the memories of one table
// selected by %[3]s: metadata always, the asset when the row has an asset URL.
// A new edge starts migrating and not present; an existing one is set
// migrating unless it is present and idle (stored) or already migrating
// (queued), so repeating a request queues nothing new; the memories it queues
// start with no failed attempts or rounds. The ICP mirror picks the migrating
// edges up from there (they reach it as edge events).
const storeForeverSQL = `
WITH m AS (
	SELECT t.id, %[2]s AS has_asset FROM %[1]s t WHERE %[3]s
), ins AS (
	INSERT INTO storage_edges AS e (memory_id, memory_type, artifact, backend, present, sync_state)
	SELECT m.id, $1::memory_type_t, a.artifact, 'icp-canister', false, 'migrating'
	FROM m CROSS JOIN LATERAL (
		SELECT 'metadata'::artifact_t AS artifact
		UNION ALL
		SELECT 'asset'::artifact_t WHERE m.has_asset
	) a
	ON CONFLICT ON CONSTRAINT storage_edges_key DO UPDATE SET sync_state = 'migrating', sync_error = NULL
	WHERE e.sync_state = 'failed' OR (e.sync_state = 'idle' AND NOT e.present)
	RETURNING e.memory_id, e.artifact
), reset AS (
	-- A person asked: the memory gets a fresh set of rounds (see the ICP mirror's retry schedule).
	DELETE FROM sync_attempts sa USING ins
	WHERE sa.memory_id = ins.memory_id AND sa.memory_type = $1::memory_type_t AND sa.backend = 'icp-canister'
)
SELECT (SELECT count(*) FROM m), ins.memory_id, ins.artifact::text FROM ins
UNION ALL
SELECT (SELECT count(*) FROM m), NULL, NULL`

// storeForever runs storeForeverSQL for one table inside tx and returns what
// it queued and how many memories matched.
func (s *Server) storeForever(ctx context.Context, tx pgx.Tx, t domain.Table, selector string, args ...any) (map[string][]string, int, error) {
	hasAsset := "false"
	if t.URLColumn != "" {
		hasAsset = "t." + domain.QuoteIdent(t.URLColumn) + " IS NOT NULL"
	}
	q := fmt.Sprintf(storeForeverSQL, t.Ident(), hasAsset, selector)
	rows, err := tx.Query(ctx, q, append([]any{t.MemoryType}, args...)...)
	if err != nil {
		return nil, 0, err
	}
	queued := map[string][]string{}
	var total int
	var id, artifact *string
	_, err = pgx.ForEachRow(rows, []any{&total, &id, &artifact}, func() error {
		if id != nil {
			queued[*id] = append(queued[*id], *artifact)
		}
		return nil
	})
	return queued, total, err
}

func collect(res *storeForeverResult, typ string, queued map[string][]string, total int) {
	ids := make([]string, 0, len(queued))
	for id := range queued {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		arts := queued[id]
		sort.Strings(arts)
		res.Queued = append(res.Queued, Queued{MemoryID: id, MemoryType: typ, Artifacts: arts})
	}
	res.Already += total - len(queued)
}

// errMirrorOff answers a store-forever request while the ICP mirror is off.
var errMirrorOff = unavailable("the ICP mirror is off (EDGESYNC_ICP_URL is empty), so nothing can be stored forever and nothing was queued; set EDGESYNC_ICP_URL and EDGESYNC_ICP_CANISTER_ID, restart edgesync, then ask again")

func (s *Server) storeForeverMemory(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.ICPMirror {
		writeError(w, errMirrorOff)
		return
	}
	typ, id, ok := memoryPath(w, r)
	if !ok {
		return
	}
	t, mapped := s.table(typ)
	if !mapped {
		writeError(w, notFound("no table is configured for memory type "+typ))
		return
	}
	res := storeForeverResult{Queued: []Queued{}}
	err := pgx.BeginFunc(r.Context(), s.pool, func(tx pgx.Tx) error {
		queued, total, err := s.storeForever(r.Context(), tx, t, "t.id = $2::uuid", id)
		if err != nil {
			return err
		}
		if total == 0 {
			return notFound(typ + " " + id + " does not exist")
		}
		collect(&res, typ, queued, total)
		return nil
	})
	if err != nil {
		s.fail(w, r, fmt.Errorf("store forever %s %s: %w", typ, id, err))
		return
	}
	writeJSON(w, http.StatusAccepted, res)
}

// storeForeverGallery queues every memory of a gallery in one transaction, one
// set-based statement per memory table. Items whose memory row is gone are
// skipped (reconcile deals with them).
func (s *Server) storeForeverGallery(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.ICPMirror {
		writeError(w, errMirrorOff)
		return
	}
	id := r.PathValue("id")
	if !domain.CanonicalUUID(id) {
		writeError(w, uuidError("gallery id", id))
		return
	}
	res := storeForeverResult{Queued: []Queued{}}
	err := pgx.BeginFunc(r.Context(), s.pool, func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(r.Context(), `SELECT 1 FROM galleries WHERE id = $1`, id).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("gallery " + id + " does not exist")
		}
		if err != nil {
			return err
		}
		types := make([]string, 0, len(s.tables))
		for typ := range s.tables {
			types = append(types, typ)
		}
		sort.Strings(types)
		for _, typ := range types {
			t := s.tables[typ]
			sel := "t.id IN (SELECT gi.memory_id FROM gallery_items gi WHERE gi.gallery_id = $2::uuid AND gi.memory_type = $1::memory_type_t)"
			queued, total, err := s.storeForever(r.Context(), tx, t, sel, id)
			if err != nil {
				return fmt.Errorf("%s: %w", t.Name, err)
			}
			collect(&res, typ, queued, total)
		}
		return nil
	})
	if err != nil {
		s.fail(w, r, fmt.Errorf("store forever gallery %s: %w", id, err))
		return
	}
	writeJSON(w, http.StatusAccepted, res)
}
