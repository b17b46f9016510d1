package reconcile

import (
	"fmt"
	"strings"

	"github.com/edgesync/edgesync/domain"
	"github.com/jackc/pgx/v5"
)

// table is a validated Table with its identifiers quoted, ready to be spliced
// into SQL. Only identifiers are spliced; every value is a parameter.
type table struct {
	domain.Table
	ident string // quoted table name
	url   string // the URL expression over alias m ("NULL::text" without a URL column)
	size  string // the size expression over alias m ("NULL::bigint" without a size column)
}

func newTable(t domain.Table) table {
	ident := t.Ident() // validated by Config.Validate
	tt := table{Table: t, ident: ident, url: "NULL::text", size: "NULL::bigint"}
	if t.URLColumn != "" {
		tt.url = "m." + pgx.Identifier{t.URLColumn}.Sanitize()
	}
	if t.SizeColumn != "" {
		tt.size = "m." + pgx.Identifier{t.SizeColumn}.Sanitize()
	}
	return tt
}

// args numbers the parameters of one statement as they are added.
type args []any

// stmt is one statement and its arguments.
type stmt struct {
	q string
	a args
}

func (a *args) add(v any) string {
	*a = append(*a, v)
	return fmt.Sprintf("$%d", len(*a))
}

// span is a key range (lo, hi] of memory ids; a nil end is open.
type span struct{ lo, hi *string }

// cond restricts col to the span. The bounds are text cast to uuid, so a
// plain string parameter works and the index on col can be used.
func (c span) cond(a *args, col string) string {
	var parts []string
	if c.lo != nil {
		parts = append(parts, col+" > "+a.add(*c.lo)+"::text::uuid")
	}
	if c.hi != nil {
		parts = append(parts, col+" <= "+a.add(*c.hi)+"::text::uuid")
	}
	if len(parts) == 0 {
		return "true"
	}
	return strings.Join(parts, " AND ")
}

// Why the statements look the way they do: the planner cannot interpolate
// inside a histogram bucket for uuid, so a chunk's key range is often
// estimated at one row. With a join, that estimate can pick a nested loop
// that rescans the whole range for every row (minutes per chunk), and with
// a large estimate a hash join that reads a whole table per chunk. So every
// statement is driven by one range scan, and everything else is a per-row
// probe by key that the planner cannot turn into a join: EXISTS with
// OFFSET 0 (never pulled up into a join) and LATERAL subqueries. The cost of
// a chunk is then proportional to its rows, whatever the estimates say.

// edgeExists probes storage_edges_key for one edge of memory m.
func edgeExists(mt, artifact, backend string) string {
	return `EXISTS (SELECT 1 FROM storage_edges x WHERE x.memory_id = m.id AND x.memory_type = ` + mt +
		`::text::memory_type_t AND x.artifact = '` + artifact + `' AND x.backend = '` + backend + `' OFFSET 0)`
}

// driftPred is true for a web2 edge e that disagrees with the row whose URL
// and size expressions are given (CONTRACT section 4).
func (t table) driftPred(e, url, size string) string {
	blobOK := e + ".present AND " + e + ".location IS NOT DISTINCT FROM " + url
	if t.SizeColumn != "" {
		blobOK += " AND " + e + ".size_bytes IS NOT DISTINCT FROM " + size
	}
	return `((` + e + `.artifact = 'metadata' AND ` + e + `.backend = 'neon-db' AND (NOT ` + e + `.present OR ` + e + `.location IS NOT NULL))
	  OR (` + e + `.artifact = 'asset' AND ` + e + `.backend = 'vercel-blob' AND CASE WHEN ` + url + ` IS NULL
	        THEN ` + e + `.present OR ` + e + `.location IS NOT NULL
	        ELSE NOT (` + blobOK + `) END))`
}

// orphanFilter selects the edges of this memory type in the span whose row
// is gone; with the keep policy icp-canister edges are never orphans. The
// range is read from the key index and the row probed by primary key, both
// index-only when the visibility map allows.
func (t table) orphanFilter(a *args, sp span, keepICP bool) string {
	mt := a.add(t.MemoryType)
	q := `e.memory_type = ` + mt + `::text::memory_type_t AND ` + sp.cond(a, "e.memory_id")
	if keepICP {
		q += ` AND e.backend <> 'icp-canister'`
	}
	return q + ` AND NOT EXISTS (SELECT 1 FROM ` + t.ident + ` m WHERE m.id = e.memory_id OFFSET 0)`
}

func (t table) countOrphans(sp span, keepICP bool) stmt {
	var a args
	q := `SELECT count(*) FROM storage_edges e WHERE ` + t.orphanFilter(&a, sp, keepICP)
	return stmt{q, a}
}

// deleteOrphans finds the orphans first (an InitPlan reading only indexes),
// so the heap is touched only for the edges it deletes; the delete then
// re-checks the memory row, so an edge whose memory appeared meanwhile is
// left alone.
func (t table) deleteOrphans(sp span, keepICP bool) stmt {
	var a args
	find := `SELECT e.memory_id FROM storage_edges e WHERE ` + t.orphanFilter(&a, sp, keepICP)
	q := `DELETE FROM storage_edges e WHERE e.memory_id = ANY (ARRAY(` + find + `)) AND ` + t.orphanFilter(&a, span{}, keepICP)
	return stmt{q, a}
}

// edgeFlags is a LATERAL subquery over the edges of memory m (one probe of
// the key index): whether each web2 edge exists and whether it drifted.
func (t table) edgeFlags(mt string) string {
	return `CROSS JOIN LATERAL (
	  SELECT coalesce(bool_or(e.artifact = 'metadata' AND e.backend = 'neon-db'), false) AS has_meta,
	         coalesce(bool_or(e.artifact = 'asset' AND e.backend = 'vercel-blob'), false) AS has_blob,
	         count(*) FILTER (WHERE ` + t.driftPred("e", t.url, t.size) + `) AS drifted
	  FROM storage_edges e WHERE e.memory_id = m.id AND e.memory_type = ` + mt + `::text::memory_type_t) x`
}

// countMissingDrift counts missing edges and drifted web2 edges of the
// memories in the span.
func (t table) countMissingDrift(sp span) stmt {
	var a args
	mt := a.add(t.MemoryType)
	q := `SELECT coalesce(sum((NOT x.has_meta)::int + (` + t.url + ` IS NOT NULL AND NOT x.has_blob)::int), 0),
	  coalesce(sum(x.drifted), 0)
	FROM ` + t.ident + ` m ` + t.edgeFlags(mt) + `
	WHERE ` + sp.cond(&a, "m.id")
	return stmt{q, a}
}

// repair creates the missing edges and corrects the drifted ones of the
// memories in the span, in one pass over their rows (the same probes a dry
// run makes). Only rows that need a change are locked, for share: a
// concurrent delete or URL change of such a row waits for this statement
// (and the CDC pipeline applies it after us) or is seen by it, so no edge is
// made for a deleted row and no stale URL is written. ON CONFLICT DO NOTHING
// lets the pipeline's own insert win, and the UPDATE re-checks the drift on
// the edge's latest version, so an edge fixed meanwhile is neither counted
// nor rewritten. It returns the rows inserted and updated.
func (t table) repair(sp span) stmt {
	var a args
	mt := a.add(t.MemoryType)
	q := `WITH f AS (
	  SELECT m.id, ` + t.url + ` AS url, ` + t.size + ` AS size, x.has_meta, x.has_blob, x.drifted
	  FROM ` + t.ident + ` m CROSS JOIN LATERAL (
	    SELECT coalesce(bool_or(e.artifact = 'metadata' AND e.backend = 'neon-db'), false) AS has_meta,
	           coalesce(bool_or(e.artifact = 'asset' AND e.backend = 'vercel-blob'), false) AS has_blob,
	           array_agg(e.id) FILTER (WHERE ` + t.driftPred("e", t.url, t.size) + `) AS drifted
	    FROM storage_edges e WHERE e.memory_id = m.id AND e.memory_type = ` + mt + `::text::memory_type_t) x
	  WHERE ` + sp.cond(&a, "m.id") + `
	    AND (NOT x.has_meta OR (` + t.url + ` IS NOT NULL AND NOT x.has_blob) OR x.drifted IS NOT NULL)
	  FOR SHARE OF m
	), ins AS (
	  INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, location, size_bytes)
	  SELECT id, ` + mt + `::text::memory_type_t, 'metadata'::artifact_t, 'neon-db'::backend_t, true, NULL, NULL FROM f WHERE NOT has_meta
	  UNION ALL
	  SELECT id, ` + mt + `::text::memory_type_t, 'asset'::artifact_t, 'vercel-blob'::backend_t, true, url, size FROM f WHERE url IS NOT NULL AND NOT has_blob
	  ON CONFLICT ON CONSTRAINT storage_edges_key DO NOTHING
	  RETURNING 1
	), upd AS (
	  UPDATE storage_edges e SET
	    present = (e.artifact = 'metadata' OR d.url IS NOT NULL),
	    location = CASE WHEN e.artifact = 'metadata' THEN NULL ELSE d.url END`
	if t.SizeColumn != "" {
		q += `,
	    size_bytes = CASE WHEN e.artifact = 'asset' AND d.url IS NOT NULL THEN d.size ELSE e.size_bytes END`
	}
	q += `
	  FROM (SELECT unnest(drifted) AS edge_id, url, size FROM f WHERE drifted IS NOT NULL) d
	  WHERE e.id = d.edge_id AND ` + t.driftPred("e", "d.url", "d.size") + `
	  RETURNING 1
	)
	SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM upd)`
	return stmt{q, a}
}
