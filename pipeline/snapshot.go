package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/sinks/edges"
	natssink "github.com/edgesync/edgesync/sinks/nats"
)

// snapshot gives every existing memory row its edges (the backfill of seed
// Phase 7). With snapName it reads in the slot's exported snapshot, so the
// snapshot and the stream neither overlap nor leave a gap; without it (a
// resumed, interrupted snapshot) it reads the current rows, which still
// converges because the slot replays every later change. Rows are read in
// keyset chunks on the primary key, never all at once, and progress is saved
// after each chunk so an interruption resumes where it stopped.
func (p *Pipeline) snapshot(ctx context.Context, w *edges.Writer, pub *natssink.Publisher, snapName string, at cdc.LSN, from state) error {
	started := time.Now()
	tx, err := p.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("snapshot: begin: %w", err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // read-only
	if snapName != "" {
		lit, err := tx.Conn().PgConn().EscapeString(snapName)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+lit+"'"); err != nil {
			return fmt.Errorf("snapshot: import exported snapshot %s: %w", snapName, err)
		}
	}
	skipping := from.SnapshotTable != ""
	var rows, created int64
	for _, t := range p.cfg.Tables {
		after := ""
		if skipping {
			if t.Name != from.SnapshotTable {
				continue // done before the interruption
			}
			skipping, after = false, from.SnapshotAfter
		}
		for {
			n, last, c, err := p.snapshotChunk(ctx, tx, w, pub, t, after, at)
			if err != nil {
				return err
			}
			rows, created = rows+int64(n), created+c
			if n == 0 {
				break
			}
			after = last
			if err := saveSnapshotProgress(ctx, p.pool, p.cfg.Slot, t.Name, after, c); err != nil {
				return fmt.Errorf("snapshot: save progress: %w", err)
			}
			p.metrics.SnapshotEdges.Add(float64(c))
		}
	}
	total, err := markSnapshotDone(ctx, p.pool, p.cfg.Slot)
	if err != nil {
		return fmt.Errorf("snapshot: mark done: %w", err)
	}
	p.log.Info("initial snapshot done: existing memories have their edges",
		zap.Int64("rows", rows), zap.Int64("edges_created", created), zap.Int64("edges_created_total", total),
		zap.Duration("took", time.Since(started)))
	return nil
}

func (p *Pipeline) snapshotChunk(ctx context.Context, tx pgx.Tx, w *edges.Writer, pub *natssink.Publisher, t domain.Table, after string, at cdc.LSN) (int, string, int64, error) {
	urlExpr, sizeExpr := "NULL::text", "NULL::bigint"
	if t.URLColumn != "" {
		urlExpr = domain.QuoteIdent(t.URLColumn) + "::text"
	}
	if t.SizeColumn != "" {
		sizeExpr = domain.QuoteIdent(t.SizeColumn) + "::bigint"
	}
	table := t.Ident()
	q := "SELECT id::text, " + urlExpr + ", " + sizeExpr + ", CASE WHEN $3 THEN row_to_json(m)::text END FROM " + table + " m WHERE ($1 = '' OR id > $1::uuid) ORDER BY id LIMIT $2"
	rs, err := tx.Query(ctx, q, after, p.cfg.SnapshotChunk, p.cfg.SnapshotEvents)
	if err != nil {
		return 0, "", 0, fmt.Errorf("snapshot: read %s: %w", t.Name, err)
	}
	var ops []edges.Op
	var docs []string
	for rs.Next() {
		var id string
		var url, doc *string
		var size *int64
		if err := rs.Scan(&id, &url, &size, &doc); err != nil {
			rs.Close()
			return 0, "", 0, fmt.Errorf("snapshot: scan %s: %w", t.Name, err)
		}
		if size != nil && *size < 0 {
			size = nil
		}
		ops = append(ops, edges.Op{MemoryID: id, MemoryType: t.MemoryType, URLKnown: t.URLColumn != "", URL: url, Size: size})
		if doc != nil {
			docs = append(docs, *doc)
		}
	}
	rs.Close()
	if err := rs.Err(); err != nil {
		return 0, "", 0, fmt.Errorf("snapshot: read %s: %w", t.Name, err)
	}
	if len(ops) == 0 {
		return 0, "", 0, nil
	}
	st, err := w.Apply(ctx, ops)
	if err != nil {
		return 0, "", 0, fmt.Errorf("snapshot: write edges: %w", err)
	}
	if p.cfg.SnapshotEvents {
		if err := p.publishSnapshot(ctx, pub, t, ops, docs, at); err != nil {
			return 0, "", 0, err
		}
	}
	return len(ops), ops[len(ops)-1].MemoryID, st.Created, nil
}

// publishSnapshot publishes a `snapshot` event per row and waits for the acks.
// Ids carry the slot's consistent point, so a re-snapshot after a lost slot is
// not mistaken for a duplicate.
func (p *Pipeline) publishSnapshot(ctx context.Context, pub *natssink.Publisher, t domain.Table, ops []edges.Op, docs []string, at cdc.LSN) error {
	tr := cdc.NewTracker(0)
	pend := tr.Open()
	subject := domain.Subjects{Prefix: p.cfg.SubjectPrefix}.Memory(t.MemoryType, cdc.EventSnapshot)
	txn := &cdc.Txn{CommitLSN: at}
	for i, op := range ops {
		id := p.cfg.Slot + "/snapshot/" + at.String() + "/" + op.MemoryID
		h := cdc.EventHeader{ID: id, Op: cdc.EventSnapshot, MemoryID: op.MemoryID, MemoryType: t.MemoryType,
			Table: t.Qualified(), LSN: at, Txn: txn}
		if i < len(docs) {
			h.AfterJSON = []byte(docs[i])
		}
		b := cdc.AppendEvent(nil, h, nil, nil, nil, time.Now())
		if err := pub.Publish(ctx, op.MemoryID, natssink.Message(subject, id, b), pend); err != nil {
			return err
		}
	}
	pend.Seal(1)
	for tr.Confirmed() != 1 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}
