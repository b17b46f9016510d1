package edges

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/domain"
)

// Op is the desired state of one memory's web2 edges after a change.
type Op struct {
	MemoryID   string
	MemoryType string
	// Delete removes the memory's web2 edges (and ICP edges when the policy
	// says so).
	Delete bool
	// URLKnown is false when the change did not carry the URL (an unchanged
	// TOAST value), or the memory type has no asset: the asset edge is then
	// left as it is.
	URLKnown bool
	URL      *string
	Size     *int64
	// hadURL: an earlier change collapsed into this one set a URL, so a
	// null URL now must leave a not-present asset edge, as it would have had
	// the changes been written one by one.
	hadURL bool
	// fresh: the memory was deleted earlier in the batch and then
	// re-created. Its edges are deleted first and then written as this op
	// says, as a one-by-one replay would leave them: nothing of the old
	// edges (content hash, sync state, a stale asset edge, ICP edges under
	// the delete policy) survives into the new memory's edges.
	fresh bool
}

// Stats counts what a write did.
type Stats struct {
	Created int64 // edges inserted
	Updated int64 // edges changed
	Deleted int64 // edges removed
}

// Config of the writer.
type Config struct {
	// DeleteICPEdges removes icp-canister edges of deleted memories too (the
	// "delete" policy); by default they are kept.
	DeleteICPEdges bool
	MaxBatch       int
	FlushInterval  time.Duration
}

// Writer writes edges to Postgres.
type Writer struct {
	pool     *pgxpool.Pool
	backends []string
	cfg      Config
}

// NewWriter returns a writer on pool.
func NewWriter(pool *pgxpool.Pool, cfg Config) *Writer {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 2000
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 5 * time.Millisecond
	}
	b := []string{domain.BackendNeon, domain.BackendBlob}
	if cfg.DeleteICPEdges {
		b = append(b, domain.BackendICP)
	}
	return &Writer{pool: pool, backends: b, cfg: cfg}
}

type key struct{ id, typ string }

// Collapse keeps the last op per memory, in first-seen order, carrying what
// the earlier ops of the memory imply for it (see Op.hadURL and Op.fresh), so
// that writing the collapsed ops leaves the edges a one-by-one write leaves.
func Collapse(ops []Op) []Op {
	idx := make(map[key]int, len(ops))
	out := make([]Op, 0, len(ops))
	for _, op := range ops {
		k := key{op.MemoryID, op.MemoryType}
		if i, ok := idx[k]; ok {
			prev := out[i]
			// An update without the URL keeps what the previous op said about it.
			if !op.Delete && !op.URLKnown && !prev.Delete && prev.URLKnown {
				op.URLKnown, op.URL, op.Size = true, prev.URL, prev.Size
			}
			if !op.Delete && !prev.Delete && (prev.URL != nil || prev.hadURL) {
				op.hadURL = true
			}
			if !op.Delete && (prev.Delete || prev.fresh) {
				op.fresh = true
			}
			out[i] = op
			continue
		}
		idx[k] = len(out)
		out = append(out, op)
	}
	return out
}

const upsertSQL = `
WITH i AS (
    SELECT * FROM unnest($1::uuid[], $2::memory_type_t[], $3::text[], $4::bool[], $5::bigint[], $6::bool[])
        AS t(id, typ, url, known, size, tomb)
), meta AS (
    INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, last_synced_at)
    SELECT id, typ, 'metadata', 'neon-db', true, now() FROM i
    ON CONFLICT (memory_id, memory_type, artifact, backend) DO UPDATE
        SET present = true, last_synced_at = now()
        WHERE NOT storage_edges.present
    RETURNING (xmax = 0) AS inserted
), blob AS (
    INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, location, size_bytes, last_synced_at)
    SELECT id, typ, 'asset', 'vercel-blob', url IS NOT NULL, url, size, now() FROM i WHERE known AND (url IS NOT NULL OR tomb)
    ON CONFLICT (memory_id, memory_type, artifact, backend) DO UPDATE
        SET present = excluded.present, location = excluded.location, size_bytes = excluded.size_bytes, last_synced_at = now()
        WHERE (storage_edges.present, storage_edges.location, storage_edges.size_bytes)
              IS DISTINCT FROM (excluded.present, excluded.location, excluded.size_bytes)
    RETURNING (xmax = 0) AS inserted
)
SELECT (SELECT count(*) FILTER (WHERE inserted) FROM meta) + (SELECT count(*) FILTER (WHERE inserted) FROM blob),
       (SELECT count(*) FILTER (WHERE NOT inserted) FROM meta) + (SELECT count(*) FILTER (WHERE NOT inserted) FROM blob)`

const unblobSQL = `
UPDATE storage_edges e SET present = false, location = NULL, size_bytes = u.size, last_synced_at = now()
FROM unnest($1::uuid[], $2::memory_type_t[], $3::bigint[]) AS u(id, typ, size)
WHERE e.memory_id = u.id AND e.memory_type = u.typ AND e.artifact = 'asset' AND e.backend = 'vercel-blob'
  AND (e.present, e.location, e.size_bytes) IS DISTINCT FROM (false, NULL::text, u.size)`

const deleteSQL = `
DELETE FROM storage_edges e
USING unnest($1::uuid[], $2::memory_type_t[]) AS d(id, typ)
WHERE e.memory_id = d.id AND e.memory_type = d.typ AND e.backend = ANY($3::backend_t[])`

// Apply writes ops (collapsed per memory) in one transaction.
func (w *Writer) Apply(ctx context.Context, ops []Op) (Stats, error) {
	var st Stats
	ops = Collapse(ops)
	var (
		uIDs, uTypes, dIDs, dTypes []string
		urls                       []*string
		known, tomb                []bool
		sizes                      []*int64
		nIDs, nTypes               []string
		nSizes                     []*int64
	)
	for _, op := range ops {
		if op.Delete || op.fresh {
			dIDs, dTypes = append(dIDs, op.MemoryID), append(dTypes, op.MemoryType)
		}
		if op.Delete {
			continue
		}
		uIDs, uTypes = append(uIDs, op.MemoryID), append(uTypes, op.MemoryType)
		urls, known, sizes = append(urls, op.URL), append(known, op.URLKnown), append(sizes, op.Size)
		tomb = append(tomb, op.hadURL && op.URL == nil)
		// A cleared URL (not one set and cleared within this batch, which
		// the upsert turns into a not-present edge) updates an existing edge.
		if op.URLKnown && op.URL == nil && !op.hadURL {
			nIDs, nTypes, nSizes = append(nIDs, op.MemoryID), append(nTypes, op.MemoryType), append(nSizes, op.Size)
		}
	}
	err := pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		// Deletes first: a memory deleted and re-created in this batch (fresh)
		// loses its old edges before the upsert writes the new ones.
		if len(dIDs) > 0 {
			tag, err := tx.Exec(ctx, deleteSQL, dIDs, dTypes, w.backends)
			if err != nil {
				return fmt.Errorf("delete %d memories' edges: %w", len(dIDs), err)
			}
			st.Deleted = tag.RowsAffected()
		}
		if len(uIDs) > 0 {
			if err := tx.QueryRow(ctx, upsertSQL, uIDs, uTypes, urls, known, sizes, tomb).Scan(&st.Created, &st.Updated); err != nil {
				return fmt.Errorf("upsert %d memories' edges: %w", len(uIDs), err)
			}
		}
		if len(nIDs) > 0 {
			tag, err := tx.Exec(ctx, unblobSQL, nIDs, nTypes, nSizes)
			if err != nil {
				return fmt.Errorf("mark %d cleared asset edges not present: %w", len(nIDs), err)
			}
			st.Updated += tag.RowsAffected()
		}
		return nil
	})
	return st, err
}

// Truncate removes the web2 edges (and ICP edges under the delete policy) of
// every memory of a type.
func (w *Writer) Truncate(ctx context.Context, memoryType string) (int64, error) {
	tag, err := w.pool.Exec(ctx, `DELETE FROM storage_edges WHERE memory_type = $1 AND backend = ANY($2::backend_t[])`, memoryType, w.backends)
	if err != nil {
		return 0, fmt.Errorf("truncate %s edges: %w", memoryType, err)
	}
	return tag.RowsAffected(), nil
}

// entry is an op queued with the transaction it belongs to.
type entry struct {
	op       Op
	truncate string // memory type of a truncate, instead of op
	p        *cdc.Pending
}

// Batcher queues ops from the pipeline and writes them in batches on its own
// goroutine; each op's transaction is told when its batch has committed.
type Batcher struct {
	w     *Writer
	in    chan entry
	stats func(Stats)
}

// NewBatcher returns a batcher; onStats (may be nil) sees every batch's counts.
func NewBatcher(w *Writer, onStats func(Stats)) *Batcher {
	return &Batcher{w: w, in: make(chan entry, 2*w.cfg.MaxBatch), stats: onStats}
}

// Add queues op for p's transaction (p.Add(1) first; the batcher calls Done).
// It blocks while the queue is full, which is the pipeline's backpressure.
func (b *Batcher) Add(ctx context.Context, op Op, p *cdc.Pending) error {
	p.Add(1)
	select {
	case b.in <- entry{op: op, p: p}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// AddTruncate queues a truncate of a memory type, applied after every op
// queued before it.
func (b *Batcher) AddTruncate(ctx context.Context, memoryType string, p *cdc.Pending) error {
	p.Add(1)
	select {
	case b.in <- entry{truncate: memoryType, p: p}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run writes batches until ctx ends or a write fails. A batch is written when
// it is full, when nothing more is queued, or FlushInterval after its first op,
// whichever comes first; a truncate first writes what was queued before it.
func (b *Batcher) Run(ctx context.Context) error {
	ops := make([]Op, 0, b.w.cfg.MaxBatch)
	ps := make([]*cdc.Pending, 0, b.w.cfg.MaxBatch)
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		st, err := b.w.Apply(ctx, ops)
		if err != nil {
			return err
		}
		b.report(st)
		for _, p := range ps {
			p.Done(1)
		}
		ops, ps = ops[:0], ps[:0]
		return nil
	}
	handle := func(e entry) error {
		if e.truncate == "" {
			ops, ps = append(ops, e.op), append(ps, e.p)
			return nil
		}
		if err := flush(); err != nil {
			return err
		}
		n, err := b.w.Truncate(ctx, e.truncate)
		if err != nil {
			return err
		}
		b.report(Stats{Deleted: n})
		e.p.Done(1)
		return nil
	}
	wait := time.NewTimer(time.Hour)
	defer wait.Stop()
	for {
		var e entry
		if len(ops) == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case e = <-b.in:
			}
			wait.Reset(b.w.cfg.FlushInterval)
		} else {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case e = <-b.in:
			case <-wait.C:
				if err := flush(); err != nil {
					return err
				}
				continue
			}
		}
		if err := handle(e); err != nil {
			return err
		}
		if len(ops) >= b.w.cfg.MaxBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

func (b *Batcher) report(st Stats) {
	if b.stats != nil {
		b.stats(st)
	}
}
