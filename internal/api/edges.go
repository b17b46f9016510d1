package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgesync/edgesync/domain"
)

// Limits on free-text edge fields: generous for URLs and error texts, small
// enough that one edge cannot bloat the table.
const (
	maxLocationLen  = 4096
	maxSyncErrorLen = 8192
)

// edgeBody is the PUT /api/storage/edges body. Pointers tell "absent or null"
// from zero values.
type edgeBody struct {
	MemoryID     *string    `json:"memory_id"`
	MemoryType   *string    `json:"memory_type"`
	Artifact     *string    `json:"artifact"`
	Backend      *string    `json:"backend"`
	Present      *bool      `json:"present"`
	Location     *string    `json:"location"`
	ContentHash  *string    `json:"content_hash"`
	SizeBytes    *int64     `json:"size_bytes"`
	SyncState    *string    `json:"sync_state"`
	SyncError    *string    `json:"sync_error"`
	LastSyncedAt *time.Time `json:"last_synced_at"`
}

// edgeInput is a validated edge. PUT replaces the whole edge: optional fields
// left out become null (present: false, sync_state: idle).
type edgeInput struct {
	MemoryID     string
	MemoryType   string
	Artifact     string
	Backend      string
	Present      bool
	Location     *string
	ContentHash  *string
	SizeBytes    *int64
	SyncState    string
	SyncError    *string
	LastSyncedAt *time.Time
}

// Edge is a storage_edges row as the API returns it.
type Edge struct {
	ID           string     `json:"id"`
	MemoryID     string     `json:"memory_id"`
	MemoryType   string     `json:"memory_type"`
	Artifact     string     `json:"artifact"`
	Backend      string     `json:"backend"`
	Present      bool       `json:"present"`
	Location     *string    `json:"location"`
	ContentHash  *string    `json:"content_hash"`
	SizeBytes    *int64     `json:"size_bytes"`
	SyncState    string     `json:"sync_state"`
	SyncError    *string    `json:"sync_error"`
	LastSyncedAt *time.Time `json:"last_synced_at"`
	CreatedAt    time.Time  `json:"created_at"`
	UpdatedAt    time.Time  `json:"updated_at"`
}

const edgeColumns = `id, memory_id, memory_type, artifact, backend, present, location, content_hash,
	size_bytes, sync_state, sync_error, last_synced_at, created_at, updated_at`

func scanEdge(row pgx.Row) (Edge, error) {
	var e Edge
	err := row.Scan(&e.ID, &e.MemoryID, &e.MemoryType, &e.Artifact, &e.Backend, &e.Present, &e.Location,
		&e.ContentHash, &e.SizeBytes, &e.SyncState, &e.SyncError, &e.LastSyncedAt, &e.CreatedAt, &e.UpdatedAt)
	return e, err
}

// decodeEdge reads and validates one edge. Every failure is a 400 (or 413
// for an oversized body); it never panics on any input.
func decodeEdge(r io.Reader) (edgeInput, *apiError) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var b edgeBody
	if err := dec.Decode(&b); err != nil {
		return edgeInput{}, jsonError(err)
	}
	// Exactly one JSON value: trailing data is a client bug worth reporting.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return edgeInput{}, tooLarge(mbe.Limit)
		}
		return edgeInput{}, badRequest("request body has data after the JSON object")
	}
	return b.validate()
}

func jsonError(err error) *apiError {
	var mbe *http.MaxBytesError
	var ute *json.UnmarshalTypeError
	var se *json.SyntaxError
	var te *time.ParseError
	switch {
	case errors.As(err, &mbe):
		return tooLarge(mbe.Limit)
	case errors.Is(err, io.EOF):
		return badRequest("request body is empty: send a JSON object")
	case errors.As(err, &ute):
		if ute.Field == "" {
			return badRequest("request body must be a JSON object")
		}
		return badRequest(fmt.Sprintf("field %s must be %s, got %s", ute.Field, jsonKind(ute.Type.Kind().String()), ute.Value))
	case errors.As(err, &se):
		return badRequest(fmt.Sprintf("request body is not valid JSON (at byte %d)", se.Offset))
	case errors.As(err, &te):
		return badRequest("last_synced_at must be an RFC 3339 timestamp (2024-05-01T12:00:00Z)")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return badRequest(strings.TrimPrefix(err.Error(), "json: ") + " (allowed: memory_id, memory_type, artifact, backend, present, location, content_hash, size_bytes, sync_state, sync_error, last_synced_at)")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("request body is truncated JSON")
	}
	return badRequest("request body is not a valid edge: " + truncate(err.Error(), 200))
}

func jsonKind(k string) string {
	switch k {
	case "int64":
		return "a whole number"
	case "ptr", "pointer":
		return "a value of the documented type"
	}
	return "a " + k
}

func (b edgeBody) validate() (edgeInput, *apiError) {
	var in edgeInput
	required := func(name string, v *string) (string, *apiError) {
		if v == nil {
			return "", badRequest(name + " is required")
		}
		return *v, nil
	}
	var ae *apiError
	if in.MemoryID, ae = required("memory_id", b.MemoryID); ae != nil {
		return in, ae
	}
	if !domain.CanonicalUUID(in.MemoryID) {
		return in, uuidError("memory_id", in.MemoryID)
	}
	if in.MemoryType, ae = required("memory_type", b.MemoryType); ae != nil {
		return in, ae
	}
	if !oneOf(in.MemoryType, memoryTypes) {
		return in, enumError("memory_type", in.MemoryType, memoryTypes)
	}
	if in.Artifact, ae = required("artifact", b.Artifact); ae != nil {
		return in, ae
	}
	if !oneOf(in.Artifact, artifacts) {
		return in, enumError("artifact", in.Artifact, artifacts)
	}
	if in.Backend, ae = required("backend", b.Backend); ae != nil {
		return in, ae
	}
	if !oneOf(in.Backend, backends) {
		return in, enumError("backend", in.Backend, backends)
	}
	if b.Present != nil {
		in.Present = *b.Present
	}
	in.SyncState = domain.SyncIdle
	if b.SyncState != nil {
		if !oneOf(*b.SyncState, syncStates) {
			return in, enumError("sync_state", *b.SyncState, syncStates)
		}
		in.SyncState = *b.SyncState
	}
	if b.Location != nil {
		if ae := text("location", *b.Location, maxLocationLen); ae != nil {
			return in, ae
		}
		in.Location = b.Location
	}
	if b.SyncError != nil {
		if ae := text("sync_error", *b.SyncError, maxSyncErrorLen); ae != nil {
			return in, ae
		}
		in.SyncError = b.SyncError
	}
	if b.ContentHash != nil {
		h, ok := normalizeHash(*b.ContentHash)
		if !ok {
			return in, badRequest("content_hash must be a SHA-256 digest: 64 hex digits, optionally prefixed sha256:")
		}
		in.ContentHash = &h
	}
	if b.SizeBytes != nil {
		if *b.SizeBytes < 0 {
			return in, badRequest("size_bytes must be 0 or more")
		}
		in.SizeBytes = b.SizeBytes
	}
	if b.LastSyncedAt != nil {
		// Postgres timestamptz ends in year 294276 and starts in 4713 BC;
		// Go's RFC 3339 parser only yields years 0000-9999, all storable.
		t := b.LastSyncedAt.UTC()
		in.LastSyncedAt = &t
	}
	return in, nil
}

// text checks a free-text field: bounded, and without NUL bytes, which
// Postgres text cannot hold (it would be a 500 otherwise).
func text(name, v string, max int) *apiError {
	if len(v) > max {
		return badRequest(fmt.Sprintf("%s is longer than %d bytes", name, max))
	}
	if strings.IndexByte(v, 0) >= 0 {
		return badRequest(name + " must not contain NUL characters")
	}
	return nil
}

// putEdge upserts one edge on its unique key. The memory must exist in the
// table its type maps to; the check and the write are one statement so a
// concurrent delete cannot slip between them. No NATS publish here: the
// write comes back through the slot as an edge event like any other.
func (s *Server) putEdge(w http.ResponseWriter, r *http.Request) {
	in, ae := decodeEdge(r.Body)
	if ae != nil {
		writeError(w, ae)
		return
	}
	t, ok := s.table(in.MemoryType)
	if !ok {
		writeError(w, notFound("no table is configured for memory_type "+in.MemoryType+", so memory "+in.MemoryID+" cannot exist"))
		return
	}
	q := `INSERT INTO storage_edges AS e (memory_id, memory_type, artifact, backend, present, location,
			content_hash, size_bytes, sync_state, sync_error, last_synced_at)
		SELECT $1::uuid, $2::memory_type_t, $3::artifact_t, $4::backend_t, $5, $6, $7, $8, $9::sync_t, $10, $11
		WHERE EXISTS (SELECT 1 FROM ` + t.Ident() + ` m WHERE m.id = $1::uuid)
		ON CONFLICT ON CONSTRAINT storage_edges_key DO UPDATE SET
			present = EXCLUDED.present, location = EXCLUDED.location, content_hash = EXCLUDED.content_hash,
			size_bytes = EXCLUDED.size_bytes, sync_state = EXCLUDED.sync_state, sync_error = EXCLUDED.sync_error,
			last_synced_at = EXCLUDED.last_synced_at
		RETURNING ` + edgeColumns
	e, err := scanEdge(s.pool.QueryRow(r.Context(), q, in.MemoryID, in.MemoryType, in.Artifact, in.Backend, in.Present,
		in.Location, in.ContentHash, in.SizeBytes, in.SyncState, in.SyncError, in.LastSyncedAt))
	if errors.Is(err, pgx.ErrNoRows) {
		writeError(w, notFound(in.MemoryType+" "+in.MemoryID+" does not exist in table "+t.Name))
		return
	}
	if err != nil {
		s.fail(w, r, fmt.Errorf("upsert edge: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, e)
}
