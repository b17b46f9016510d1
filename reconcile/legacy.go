package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/edgesync/edgesync/domain"
)

// LegacyColumn is a boolean column of a memory table that, when true, says
// the memory is stored on ICP: the flag apps kept before storage_edges.
type LegacyColumn struct {
	Table  string // a configured memory table
	Column string
}

// LegacyReport is the outcome of ImportLegacy. Counts are icp-canister edges:
// one for the metadata of every flagged row, one more for its asset where
// the row has a URL.
type LegacyReport struct {
	DryRun     bool          `json:"dry_run"`
	Tables     []LegacyTable `json:"tables"`
	Matched    int64         `json:"matched"`
	Created    int64         `json:"created"`
	Conflicted int64         `json:"conflicted"`
	// Migration drops the imported columns (goose format, with a down that
	// re-adds them and fills them from storage_edges).
	Migration string `json:"migration"`
}

// LegacyTable is one column's import.
type LegacyTable struct {
	Table      string `json:"table"`
	Column     string `json:"column"`
	MemoryType string `json:"memory_type"`
	// Flagged rows have the column set.
	Flagged int64 `json:"flagged"`
	// Matched edges already said present on ICP.
	Matched int64 `json:"matched"`
	// Created edges did not exist (on a dry run: would be created).
	Created int64 `json:"created"`
	// Conflicted edges exist but say otherwise (not present, or failed);
	// they are left alone for a person to look at.
	Conflicted int64 `json:"conflicted"`
	// ConflictSamples are up to 10 memory ids with a conflict.
	ConflictSamples []string `json:"conflict_samples,omitempty"`
}

const maxConflictSamples = 10

// legacyCol resolves a LegacyColumn against the configured tables.
func (s *Service) legacyCol(c LegacyColumn) (table, string, error) {
	if !domain.ValidIdent(c.Column) {
		return table{}, "", fmt.Errorf("legacy column %s.%s: %q is not a valid column name", c.Table, c.Column, c.Column)
	}
	for _, t := range s.tables {
		if t.Name == c.Table {
			return t, pgx.Identifier{c.Column}.Sanitize(), nil
		}
	}
	return table{}, "", fmt.Errorf("legacy column %s.%s: %s is not a configured memory table (see EDGESYNC_TABLES)", c.Table, c.Column, c.Table)
}

// ImportLegacy turns legacy "stored on ICP" flags into icp-canister edges
// (present, no content hash, idle) where they are missing, and reports what
// already matched and what conflicts. A dry run changes nothing. It holds the
// reconcile lock, so it never overlaps a run.
func (s *Service) ImportLegacy(ctx context.Context, cols []LegacyColumn, dryRun bool) (LegacyReport, error) {
	rep := LegacyReport{DryRun: dryRun}
	if s.cfgErr != nil {
		return rep, s.cfgErr
	}
	if len(cols) == 0 {
		return rep, errors.New("no legacy columns to import: set EDGESYNC_LEGACY_COLUMNS (e.g. images.stored_on_icp,videos.stored_on_icp)")
	}
	type resolved struct {
		t   table
		col string
	}
	var rs []resolved
	for _, c := range cols {
		t, col, err := s.legacyCol(c)
		if err != nil {
			return rep, err
		}
		rs = append(rs, resolved{t, col})
	}
	mig, err := s.LegacyMigration(cols)
	if err != nil {
		return rep, err
	}
	rep.Migration = mig

	conn, err := s.acquire(ctx)
	if err != nil {
		return rep, err
	}
	defer s.release(conn)
	for i, r := range rs {
		lt := LegacyTable{Table: cols[i].Table, Column: cols[i].Column, MemoryType: r.t.MemoryType}
		if err := s.importColumn(ctx, conn, r.t, r.col, dryRun, &lt); err != nil {
			return rep, fmt.Errorf("import %s.%s: %w", cols[i].Table, cols[i].Column, err)
		}
		rep.Tables = append(rep.Tables, lt)
		rep.Matched += lt.Matched
		rep.Created += lt.Created
		rep.Conflicted += lt.Conflicted
	}
	return rep, nil
}

func (s *Service) importColumn(ctx context.Context, db *pgx.Conn, t table, col string, dryRun bool, lt *LegacyTable) error {
	var lo *string
	for {
		var a args
		where := ""
		if lo != nil {
			where = " WHERE id > " + a.add(*lo) + "::text::uuid"
		}
		var n int64
		var bound *string
		q := `SELECT count(*), max(id::text COLLATE "C") FROM (SELECT id FROM ` + t.ident + where + ` ORDER BY id LIMIT ` + a.add(s.cfg.ChunkSize) + `) s`
		if err := db.QueryRow(ctx, q, a...).Scan(&n, &bound); err != nil {
			return fmt.Errorf("find the next chunk: %w", err)
		}
		sp := span{lo: lo}
		if n >= int64(s.cfg.ChunkSize) {
			sp.hi = bound
		}
		if err := s.importSpan(ctx, db, t, col, sp, dryRun, lt); err != nil {
			return err
		}
		if sp.hi == nil {
			return nil
		}
		lo = sp.hi
	}
}

// icpOK is true for the icp edge alias that agrees with a legacy "on ICP"
// flag.
func icpOK(alias string) string {
	return alias + `.present AND ` + alias + `.sync_state <> 'failed'`
}

func (s *Service) importSpan(ctx context.Context, db *pgx.Conn, t table, col string, sp span, dryRun bool, lt *LegacyTable) error {
	var a args
	mt := a.add(t.MemoryType)
	join := func(alias, artifact string) string {
		return ` LEFT JOIN storage_edges ` + alias + ` ON ` + alias + `.memory_id = m.id AND ` + alias + `.memory_type = ` + mt +
			`::text::memory_type_t AND ` + alias + `.artifact = '` + artifact + `' AND ` + alias + `.backend = 'icp-canister'`
	}
	flagged := `m.` + col + ` IS TRUE AND ` + sp.cond(&a, "m.id")
	hasURL := t.url + ` IS NOT NULL`
	q := `SELECT count(*),
	  count(*) FILTER (WHERE e.id IS NOT NULL AND ` + icpOK("e") + `) + count(*) FILTER (WHERE ` + hasURL + ` AND b.id IS NOT NULL AND ` + icpOK("b") + `),
	  count(*) FILTER (WHERE e.id IS NULL) + count(*) FILTER (WHERE ` + hasURL + ` AND b.id IS NULL),
	  count(*) FILTER (WHERE e.id IS NOT NULL AND NOT (` + icpOK("e") + `)) + count(*) FILTER (WHERE ` + hasURL + ` AND b.id IS NOT NULL AND NOT (` + icpOK("b") + `))
	FROM ` + t.ident + ` m` + join("e", "metadata") + join("b", "asset") + ` WHERE ` + flagged
	var flaggedN, matched, missing, conflicted int64
	if err := db.QueryRow(ctx, q, a...).Scan(&flaggedN, &matched, &missing, &conflicted); err != nil {
		return fmt.Errorf("compare with storage_edges: %w", err)
	}
	lt.Flagged += flaggedN
	lt.Matched += matched
	lt.Conflicted += conflicted
	if conflicted > 0 && len(lt.ConflictSamples) < maxConflictSamples {
		q := `SELECT DISTINCT m.id::text FROM ` + t.ident + ` m` + join("e", "metadata") + join("b", "asset") + ` WHERE ` + flagged + `
		  AND ((e.id IS NOT NULL AND NOT (` + icpOK("e") + `)) OR (` + hasURL + ` AND b.id IS NOT NULL AND NOT (` + icpOK("b") + `)))
		  ORDER BY 1 LIMIT ` + a.add(maxConflictSamples-len(lt.ConflictSamples))
		rows, err := db.Query(ctx, q, a...)
		if err != nil {
			return fmt.Errorf("list conflicts: %w", err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("list conflicts: %w", err)
		}
		lt.ConflictSamples = append(lt.ConflictSamples, ids...)
	}
	if dryRun {
		lt.Created += missing
		return nil
	}
	a = nil
	mt = a.add(t.MemoryType)
	flagged = `m.` + col + ` IS TRUE AND ` + sp.cond(&a, "m.id")
	ins := `INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, sync_state)
	SELECT m.id, ` + mt + `::text::memory_type_t, 'metadata'::artifact_t, 'icp-canister'::backend_t, true, 'idle'::sync_t FROM ` + t.ident + ` m
	WHERE ` + flagged + ` AND NOT ` + edgeExists(mt, "metadata", "icp-canister")
	if t.URLColumn != "" {
		ins += `
	UNION ALL
	SELECT m.id, ` + mt + `::text::memory_type_t, 'asset'::artifact_t, 'icp-canister'::backend_t, true, 'idle'::sync_t FROM ` + t.ident + ` m
	WHERE ` + flagged + ` AND ` + hasURL + ` AND NOT ` + edgeExists(mt, "asset", "icp-canister")
	}
	ins += `
	ON CONFLICT ON CONSTRAINT storage_edges_key DO NOTHING`
	n, err := s.exec(ctx, db, "create icp edges", stmt{ins, a})
	if err != nil {
		return err
	}
	lt.Created += n
	return nil
}

// LegacyMigration is the goose migration an app applies once the import is
// done, to drop the legacy columns. Its down re-adds them and sets them from
// the icp-canister edges, so a rollback loses nothing.
func (s *Service) LegacyMigration(cols []LegacyColumn) (string, error) {
	if s.cfgErr != nil {
		return "", s.cfgErr
	}
	var up, down strings.Builder
	for _, c := range cols {
		t, col, err := s.legacyCol(c)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&up, "ALTER TABLE %s DROP COLUMN %s;\n", t.ident, col)
		fmt.Fprintf(&down, "ALTER TABLE %s ADD COLUMN %s boolean DEFAULT false;\n", t.ident, col)
		fmt.Fprintf(&down, "UPDATE %s m SET %s = true WHERE EXISTS (SELECT 1 FROM storage_edges e WHERE e.memory_id = m.id AND e.memory_type = '%s' AND e.artifact = 'metadata' AND e.backend = 'icp-canister' AND e.present);\n",
			t.ident, col, t.MemoryType)
	}
	return "-- Drops the legacy \"stored on ICP\" columns: storage_edges holds that now\n" +
		"-- (imported by `edgesync reconcile --import-legacy`). The down re-adds them\n" +
		"-- and fills them from the icp-canister edges.\n\n" +
		"-- +goose Up\n" + up.String() + "\n-- +goose Down\n" + down.String(), nil
}
