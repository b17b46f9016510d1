package edges

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/edgesync/edgesync/cdc"
)

// Change is one storage_edges row change a marked write made, with the row
// images read in the write itself (text format, as pgoutput sends them).
type Change struct {
	Op                                     cdc.Op
	MemoryID, MemoryType, Artifact, Backend string
	SyncState                              string
	Before, After                          cdc.Row
}

// Written describes a committed marked write.
type Written struct {
	Anchor  cdc.LSN // the mark's position: unique per write
	Xid     uint32
	Changes []Change
}

// Columns are storage_edges' columns in table order (name and type OID).
func (w *Writer) Columns(ctx context.Context) ([]cdc.Column, error) {
	if w.cols != nil {
		return w.cols, nil
	}
	rows, err := w.pool.Query(ctx, `SELECT attname::text, atttypid::oid::int8 FROM pg_attribute
		WHERE attrelid = 'storage_edges'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`)
	if err != nil {
		return nil, fmt.Errorf("storage_edges columns: %w", err)
	}
	defer rows.Close()
	var cols []cdc.Column
	for rows.Next() {
		var name string
		var oid int64
		if err := rows.Scan(&name, &oid); err != nil {
			return nil, err
		}
		cols = append(cols, cdc.Column{Name: name, OID: uint32(oid)})
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	w.cols = cols
	w.idx = map[string]int{}
	var sel []string
	for i, c := range cols {
		w.idx[c.Name] = i
		sel = append(sel, "storage_edges."+`"`+c.Name+`"::text`)
	}
	w.sel = strings.Join(sel, ", ")
	return cols, nil
}

// ApplyMarked writes ops like Apply, in a transaction that first emits a
// transactional logical message (prefix, content) so the write is known when
// it comes back through the slot, and returns the row changes it made.
func (w *Writer) ApplyMarked(ctx context.Context, ops []Op, prefix, content string) (Written, Stats, error) {
	var out Written
	var st Stats
	if _, err := w.Columns(ctx); err != nil {
		return out, st, err
	}
	ops = Collapse(ops)
	var (
		uIDs, uTypes, dIDs, dTypes, kIDs, kTypes []string
		urls                                     []*string
		known, tomb                              []bool
		sizes                                    []*int64
		nIDs, nTypes                             []string
		nSizes                                   []*int64
	)
	for _, op := range ops {
		kIDs, kTypes = append(kIDs, op.MemoryID), append(kTypes, op.MemoryType)
		if op.Delete || op.fresh {
			dIDs, dTypes = append(dIDs, op.MemoryID), append(dTypes, op.MemoryType)
		}
		if op.Delete {
			continue
		}
		uIDs, uTypes = append(uIDs, op.MemoryID), append(uTypes, op.MemoryType)
		urls, known, sizes = append(urls, op.URL), append(known, op.URLKnown), append(sizes, op.Size)
		tomb = append(tomb, op.hadURL && op.URL == nil)
		if op.URLKnown && op.URL == nil && !op.hadURL {
			nIDs, nTypes, nSizes = append(nIDs, op.MemoryID), append(nTypes, op.MemoryType), append(nSizes, op.Size)
		}
	}
	sel := w.sel
	err := pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`SELECT pg_logical_emit_message(true, $1, $2)::text, (pg_current_xact_id()::text::int8 % 4294967296)::int8`, prefix, content)
		b.Queue(`SELECT `+sel+` FROM storage_edges JOIN unnest($1::uuid[], $2::memory_type_t[]) AS k(id, typ)
			ON storage_edges.memory_id = k.id AND storage_edges.memory_type = k.typ
			WHERE storage_edges.backend = ANY($3::backend_t[]) FOR UPDATE OF storage_edges`, kIDs, kTypes, w.backends)
		if len(dIDs) > 0 {
			b.Queue(`DELETE FROM storage_edges USING unnest($1::uuid[], $2::memory_type_t[]) AS d(id, typ)
				WHERE storage_edges.memory_id = d.id AND storage_edges.memory_type = d.typ AND storage_edges.backend = ANY($3::backend_t[])
				RETURNING `+sel, dIDs, dTypes, w.backends)
		}
		if len(uIDs) > 0 {
			b.Queue(upsertReturning(sel), uIDs, uTypes, urls, known, sizes, tomb)
		}
		if len(nIDs) > 0 {
			b.Queue(`UPDATE storage_edges SET present = false, location = NULL, size_bytes = u.size, last_synced_at = now()
				FROM unnest($1::uuid[], $2::memory_type_t[], $3::bigint[]) AS u(id, typ, size)
				WHERE storage_edges.memory_id = u.id AND storage_edges.memory_type = u.typ AND storage_edges.artifact = 'asset' AND storage_edges.backend = 'vercel-blob'
				  AND (storage_edges.present, storage_edges.location, storage_edges.size_bytes) IS DISTINCT FROM (false, NULL::text, u.size)
				RETURNING `+sel, nIDs, nTypes, nSizes)
		}
		res := tx.SendBatch(ctx, b)
		defer res.Close()
		var anchor string
		var xid int64
		if err := res.QueryRow().Scan(&anchor, &xid); err != nil {
			return fmt.Errorf("mark the edge write: %w", err)
		}
		l, err := parseLSN(anchor)
		if err != nil {
			return err
		}
		out.Anchor, out.Xid = l, uint32(xid)
		old := map[string]cdc.Row{}
		if err := w.readRows(res, func(r cdc.Row) { old[w.key(r)] = r }); err != nil {
			return fmt.Errorf("read the old edges: %w", err)
		}
		deleted := map[string]bool{}
		if len(dIDs) > 0 {
			if err := w.readRows(res, func(r cdc.Row) {
				k := w.key(r)
				deleted[k] = true
				out.Changes = append(out.Changes, w.change(cdc.OpDelete, r, nil))
				st.Deleted++
			}); err != nil {
				return fmt.Errorf("delete %d memories' edges: %w", len(dIDs), err)
			}
		}
		if len(uIDs) > 0 {
			if err := w.readRows(res, func(r cdc.Row) {
				k := w.key(r)
				if before, ok := old[k]; ok && !deleted[k] {
					out.Changes = append(out.Changes, w.change(cdc.OpUpdate, before, r))
					st.Updated++
					return
				}
				out.Changes = append(out.Changes, w.change(cdc.OpInsert, nil, r))
				st.Created++
			}); err != nil {
				return fmt.Errorf("upsert %d memories' edges: %w", len(uIDs), err)
			}
		}
		if len(nIDs) > 0 {
			if err := w.readRows(res, func(r cdc.Row) {
				out.Changes = append(out.Changes, w.change(cdc.OpUpdate, old[w.key(r)], r))
				st.Updated++
			}); err != nil {
				return fmt.Errorf("mark %d cleared asset edges not present: %w", len(nIDs), err)
			}
		}
		return res.Close()
	})
	return out, st, err
}

func upsertReturning(sel string) string {
	return `
WITH i AS (
    SELECT * FROM unnest($1::uuid[], $2::memory_type_t[], $3::text[], $4::bool[], $5::bigint[], $6::bool[])
        AS t(id, typ, url, known, size, tomb)
), meta AS (
    INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, last_synced_at)
    SELECT id, typ, 'metadata', 'neon-db', true, now() FROM i
    ON CONFLICT (memory_id, memory_type, artifact, backend) DO UPDATE
        SET present = true, last_synced_at = now()
        WHERE NOT storage_edges.present
    RETURNING ` + sel + `
), blob AS (
    INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, location, size_bytes, last_synced_at)
    SELECT id, typ, 'asset', 'vercel-blob', url IS NOT NULL, url, size, now() FROM i WHERE known AND (url IS NOT NULL OR tomb)
    ON CONFLICT (memory_id, memory_type, artifact, backend) DO UPDATE
        SET present = excluded.present, location = excluded.location, size_bytes = excluded.size_bytes, last_synced_at = now()
        WHERE (storage_edges.present, storage_edges.location, storage_edges.size_bytes)
              IS DISTINCT FROM (excluded.present, excluded.location, excluded.size_bytes)
    RETURNING ` + sel + `
)
SELECT * FROM meta UNION ALL SELECT * FROM blob`
}

func (w *Writer) readRows(res pgx.BatchResults, f func(cdc.Row)) error {
	rows, err := res.Query()
	if err != nil {
		return err
	}
	defer rows.Close()
	n := len(w.cols)
	for rows.Next() {
		raw := rows.RawValues()
		r := make(cdc.Row, n)
		for i := 0; i < n && i < len(raw); i++ {
			if raw[i] == nil {
				r[i] = cdc.Value{Kind: cdc.Null}
				continue
			}
			r[i] = cdc.Value{Kind: cdc.Text, Data: append([]byte(nil), raw[i]...)}
		}
		f(r)
	}
	return rows.Err()
}

func (w *Writer) key(r cdc.Row) string {
	m, _ := r.Text(w.idx["memory_id"])
	t, _ := r.Text(w.idx["memory_type"])
	a, _ := r.Text(w.idx["artifact"])
	b, _ := r.Text(w.idx["backend"])
	return m + "|" + t + "|" + a + "|" + b
}

func (w *Writer) change(op cdc.Op, before, after cdc.Row) Change {
	img := after
	if img == nil {
		img = before
	}
	c := Change{Op: op, Before: before, After: after}
	c.MemoryID, _ = img.Text(w.idx["memory_id"])
	c.MemoryType, _ = img.Text(w.idx["memory_type"])
	c.Artifact, _ = img.Text(w.idx["artifact"])
	c.Backend, _ = img.Text(w.idx["backend"])
	if after != nil {
		c.SyncState, _ = after.Text(w.idx["sync_state"])
	}
	return c
}

func parseLSN(s string) (cdc.LSN, error) {
	var hi, lo uint32
	if _, err := fmt.Sscanf(s, "%X/%X", &hi, &lo); err != nil {
		return 0, fmt.Errorf("bad lsn %q: %w", s, err)
	}
	return cdc.LSN(uint64(hi)<<32 | uint64(lo)), nil
}
