package scaleout

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgesync/edgesync/domain"
)

// table is one memory table of the workload and what happens to its rows:
// rows 1..ins are inserted (media with a Blob URL), rows 1..upd get a new
// URL, rows upd+1..upd+del are deleted, so no memory changes twice after
// its insert.
type table struct {
	name, memoryType string
	media            bool
	ins, upd, del    int
}

// The two table sets, each a pipeline of its own; one pipeline maps both.
var (
	media = []string{"images", "videos"}
	docs  = []string{"notes", "documents", "audio"}
)

// workload spreads 100,000·scale changes (60 % inserts, 20 % URL updates,
// 20 % deletes) over both table sets, half each.
func workload(scale float64) []table {
	n := func(v int) int { return int(float64(v) * scale) }
	return []table{
		{"images", "image", true, n(15_000), n(5_000), n(5_000)},
		{"videos", "video", true, n(15_000), n(5_000), n(5_000)},
		{"notes", "note", false, n(10_000), 0, n(4_000)},
		{"documents", "document", true, n(10_000), n(5_000), n(3_000)},
		{"audio", "audio", true, n(10_000), n(5_000), n(3_000)},
	}
}

func (t table) changes() int { return t.ins + t.upd + t.del }

func total(ts []table) (n int) {
	for _, t := range ts {
		n += t.changes()
	}
	return n
}

// domainTables maps the named tables as the reference schema does.
func domainTables(names []string) []domain.Table {
	var out []domain.Table
	for _, d := range domain.DefaultTables() {
		for _, n := range names {
			if d.Name == n {
				out = append(out, d)
			}
		}
	}
	return out
}

// memoryID is the id of row g of a table: md5(name-g), as the SQL makes it.
const idExpr = `md5($1 || '-' || g)::uuid`

// loadInserts inserts every table's rows in transactions of txn rows, the
// tables taking turns.
func loadInserts(ctx context.Context, pool *pgxpool.Pool, ts []table, txn int) error {
	return turns(ts, txn, func(t table) int { return t.ins }, func(t table, from, to int) error {
		q := `INSERT INTO ` + pgx.Identifier{t.name}.Sanitize() + ` (id, owner_id, title, body) SELECT ` + idExpr + `, md5('owner')::uuid, 'memory ' || g, 'text' FROM generate_series($2::int, $3::int) g`
		if t.media {
			q = `INSERT INTO ` + pgx.Identifier{t.name}.Sanitize() + ` (id, owner_id, title, url, size_bytes, mime_type) SELECT ` + idExpr + `, md5('owner')::uuid, 'memory ' || g,
				'https://blob.example/' || $1 || '/' || g, 1000 + g, 'application/octet-stream' FROM generate_series($2::int, $3::int) g`
		}
		_, err := pool.Exec(ctx, q, t.name, from, to)
		return err
	})
}

// loadChanges updates and deletes, in transactions of txn rows.
func loadChanges(ctx context.Context, pool *pgxpool.Pool, ts []table, txn int) error {
	err := turns(ts, txn, func(t table) int { return t.upd }, func(t table, from, to int) error {
		_, err := pool.Exec(ctx, `UPDATE `+pgx.Identifier{t.name}.Sanitize()+` m SET url = 'https://blob.example/' || $1 || '/' || g || '-v2', updated_at = now()
			FROM generate_series($2::int, $3::int) g WHERE m.id = `+idExpr, t.name, from, to)
		return err
	})
	if err != nil {
		return err
	}
	return turns(ts, txn, func(t table) int { return t.del }, func(t table, from, to int) error {
		_, err := pool.Exec(ctx, `DELETE FROM `+pgx.Identifier{t.name}.Sanitize()+` m USING generate_series($2::int, $3::int) g WHERE m.id = `+idExpr,
			t.name, t.upd+from, t.upd+to)
		return err
	})
}

// turns calls do for rows 1..count(t) of each table in chunks of txn, one
// chunk per table in turn.
func turns(ts []table, txn int, count func(table) int, do func(t table, from, to int) error) error {
	for from := 1; ; from += txn {
		any := false
		for _, t := range ts {
			if from > count(t) {
				continue
			}
			any = true
			if err := do(t, from, min(from+txn-1, count(t))); err != nil {
				return fmt.Errorf("%s rows %d..: %w", t.name, from, err)
			}
		}
		if !any {
			return nil
		}
	}
}

// expectedSubjects is the stream content of the workload per subject.
func expectedSubjects(ts []table) map[string]uint64 {
	m := map[string]uint64{}
	add := func(s string, n int) {
		if n > 0 {
			m["edgesync."+s] += uint64(n)
		}
	}
	for _, t := range ts {
		add("memory."+t.memoryType+".created", t.ins)
		add("memory."+t.memoryType+".updated", t.upd)
		add("memory."+t.memoryType+".deleted", t.del)
		add("edge.neon-db.created", t.ins)
		add("edge.neon-db.deleted", t.del)
		if t.media {
			add("edge.vercel-blob.created", t.ins)
			add("edge.vercel-blob.updated", t.upd)
			add("edge.vercel-blob.deleted", t.del)
		}
	}
	return m
}

// change names one expected event: its subject and memory, and for edges
// the artifact.
type change struct {
	subject, memoryID, artifact string
}

func (c change) String() string {
	return strings.TrimSpace(c.subject + " " + c.memoryID + " " + c.artifact)
}

// expectedChanges lists every event the workload must produce, with the
// memory type it belongs to.
func expectedChanges(ctx context.Context, pool *pgxpool.Pool, ts []table) (map[change]string, error) {
	out := map[change]string{}
	for _, t := range ts {
		ids := func(from, to int) ([]string, error) {
			rows, err := pool.Query(ctx, `SELECT `+idExpr+`::text FROM generate_series($2::int, $3::int) g`, t.name, from, to)
			if err != nil {
				return nil, err
			}
			return pgx.CollectRows(rows, pgx.RowTo[string])
		}
		all, err := ids(1, t.ins)
		if err != nil {
			return nil, err
		}
		for i, id := range all {
			g := i + 1
			add := func(op string, edges bool) {
				out[change{"edgesync.memory." + t.memoryType + "." + op, id, ""}] = t.memoryType
				if !edges {
					return
				}
				out[change{"edgesync.edge.neon-db." + op, id, "metadata"}] = t.memoryType
				if t.media {
					out[change{"edgesync.edge.vercel-blob." + op, id, "asset"}] = t.memoryType
				}
			}
			add("created", true)
			switch {
			case g <= t.upd:
				add("updated", false)
				out[change{"edgesync.edge.vercel-blob.updated", id, "asset"}] = t.memoryType
			case g <= t.upd+t.del:
				add("deleted", true)
			}
		}
	}
	return out, nil
}
