package reconcile

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// table is a validated Table with its identifiers quoted, ready to be spliced
// into SQL. Only identifiers are spliced; every value is a parameter.
type table struct {
	Table
	ident string // quoted table name
	url   string // the URL expression over alias m ("NULL::text" without a URL column)
	size  string // the size expression over alias m ("NULL::bigint" without a size column)
}

func newTable(t Table) table {
	ident, _ := tableIdent(t.Name) // validated by Config.Validate
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

// edgeExists is the anti-join probe for one web2 edge of memory m.
func edgeExists(mt, artifact, backend string) string {
	return `EXISTS (SELECT 1 FROM storage_edges x WHERE x.memory_id = m.id AND x.memory_type = ` + mt +
		`::text::memory_type_t AND x.artifact = '` + artifact + `' AND x.backend = '` + backend + `')`
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
// is gone; with the keep policy icp-canister edges are never orphans.
func (t table) orphanFilter(a *args, sp span, keepICP bool) string {
	mt := a.add(t.MemoryType)
	q := `e.memory_type = ` + mt + `::text::memory_type_t AND ` + sp.cond(a, "e.memory_id")
	if keepICP {
		q += ` AND e.backend <> 'icp-canister'`
	}
	return q + ` AND NOT EXISTS (SELECT 1 FROM ` + t.ident + ` m WHERE m.id = e.memory_id)`
}

func (t table) countOrphans(sp span, keepICP bool) stmt {
	var a args
	q := `SELECT count(*) FROM storage_edges e WHERE ` + t.orphanFilter(&a, sp, keepICP)
	return stmt{q, a}
}

// deleteOrphans re-checks the memory row in the same statement, so an edge
// whose memory appeared meanwhile is left alone.
func (t table) deleteOrphans(sp span, keepICP bool) stmt {
	var a args
	q := `DELETE FROM storage_edges e WHERE ` + t.orphanFilter(&a, sp, keepICP)
	return stmt{q, a}
}

// countMissingDrift counts missing edges and drifted web2 edges of the
// memories in the span.
func (t table) countMissingDrift(sp span) stmt {
	var a args
	mt := a.add(t.MemoryType)
	join := func(alias, artifact, backend string) string {
		return ` LEFT JOIN storage_edges ` + alias + ` ON ` + alias + `.memory_id = m.id AND ` + alias + `.memory_type = ` + mt +
			`::text::memory_type_t AND ` + alias + `.artifact = '` + artifact + `' AND ` + alias + `.backend = '` + backend +
			`' AND ` + sp.cond(&a, alias+".memory_id")
	}
	meta := join("e", "metadata", "neon-db")
	blob := join("b", "asset", "vercel-blob")
	// Only the blob half of driftPred can match b (the join restricts it).
	blobDrift := t.driftPred("b", t.url, t.size)
	q := `SELECT
	  count(*) FILTER (WHERE e.id IS NULL) + count(*) FILTER (WHERE ` + t.url + ` IS NOT NULL AND b.id IS NULL),
	  count(*) FILTER (WHERE e.id IS NOT NULL AND (NOT e.present OR e.location IS NOT NULL))
	    + count(*) FILTER (WHERE b.id IS NOT NULL AND ` + blobDrift + `)
	FROM ` + t.ident + ` m` + meta + blob + ` WHERE ` + sp.cond(&a, "m.id")
	return stmt{q, a}
}

// insertMissing creates the edges section 4 requires and that do not exist.
// FOR SHARE locks only the rows that need an edge, so a concurrent delete or
// URL change of such a row waits for this statement (and the CDC pipeline
// then applies it after us) or is seen by it: no edge for a deleted row, no
// stale URL. ON CONFLICT DO NOTHING lets the pipeline's own insert win.
func (t table) insertMissing(sp span) stmt {
	var a args
	mt := a.add(t.MemoryType)
	noMeta := "NOT " + edgeExists(mt, "metadata", "neon-db")
	noBlob := "false"
	if t.URLColumn != "" {
		noBlob = t.url + " IS NOT NULL AND NOT " + edgeExists(mt, "asset", "vercel-blob")
	}
	q := `WITH need AS (
	  SELECT m.id, ` + t.url + ` AS url, ` + t.size + ` AS size, ` + noMeta + ` AS no_meta, ` + noBlob + ` AS no_blob
	  FROM ` + t.ident + ` m
	  WHERE ` + sp.cond(&a, "m.id") + ` AND (` + noMeta + ` OR ` + noBlob + `)
	  FOR SHARE OF m
	)
	INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, location, size_bytes)
	SELECT id, ` + mt + `::text::memory_type_t, 'metadata'::artifact_t, 'neon-db'::backend_t, true, NULL, NULL FROM need WHERE no_meta`
	if t.URLColumn != "" {
		q += `
	UNION ALL
	SELECT id, ` + mt + `::text::memory_type_t, 'asset'::artifact_t, 'vercel-blob'::backend_t, true, url, size FROM need WHERE no_blob`
	}
	q += `
	ON CONFLICT ON CONSTRAINT storage_edges_key DO NOTHING`
	return stmt{q, a}
}

// fixDrift sets drifted web2 edges to what the row says. The row is locked
// for share (only drifted ones) so its URL cannot change under the
// statement, and the UPDATE re-checks the drift on the edge's latest
// version, so an edge the pipeline fixed meanwhile is not counted or
// rewritten.
func (t table) fixDrift(sp span) stmt {
	var a args
	mt := a.add(t.MemoryType)
	sizeSet := ""
	if t.SizeColumn != "" {
		sizeSet = `,
	  size_bytes = CASE WHEN e.artifact = 'asset' AND d.url IS NOT NULL THEN d.size ELSE e.size_bytes END`
	}
	q := `WITH d AS (
	  SELECT e.id AS edge_id, ` + t.url + ` AS url, ` + t.size + ` AS size
	  FROM ` + t.ident + ` m JOIN storage_edges e ON e.memory_id = m.id
	  WHERE ` + sp.cond(&a, "m.id") + ` AND ` + sp.cond(&a, "e.memory_id") + `
	    AND e.memory_type = ` + mt + `::text::memory_type_t AND ` + t.driftPred("e", t.url, t.size) + `
	  FOR SHARE OF m
	)
	UPDATE storage_edges e SET
	  present = (e.artifact = 'metadata' OR d.url IS NOT NULL),
	  location = CASE WHEN e.artifact = 'metadata' THEN NULL ELSE d.url END` + sizeSet + `
	FROM d WHERE e.id = d.edge_id AND ` + t.driftPred("e", "d.url", "d.size")
	return stmt{q, a}
}
