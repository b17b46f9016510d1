package mirror

import (
	"context"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"go.uber.org/zap"

	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/icp"
)

// Wake asks for a memory to be mirrored. It never blocks: the pipeline calls it for every
// migrating icp-canister edge it sees, and the mirror is slow and remote and must not hold the
// WAL. When the queue is full the wake is dropped and the mirror re-reads the migrating edges
// instead, which finds the memory again. A malformed memory is logged and dropped.
func (m *Mirror) Wake(memoryID, memoryType string) {
	if !icp.ValidUUID(memoryID) {
		m.log.Warn("icp wake with a memory id that is not a canonical UUID; dropped", zap.String("memory_id", memoryID))
		return
	}
	if _, ok := m.tables[memoryType]; !ok {
		m.log.Warn("icp wake of a memory type without a table mapping; dropped",
			zap.String("memory_id", memoryID), zap.String("memory_type", memoryType))
		return
	}
	select {
	case m.wakes <- wake{memoryID, memoryType}:
	default:
		m.dropped.Store(true)
	}
}

// feed turns wakes into jobs until ctx ends. It starts with one scan of the migrating edges, and
// scans again whenever wakes were dropped or a scan failed: the one path by which the mirror
// finds work besides the wakes themselves.
func (m *Mirror) feed(ctx context.Context, rc *river.Client[pgx.Tx]) {
	m.dropped.Store(true)
	tick := time.NewTicker(rescanInterval)
	defer tick.Stop()
	scan := func() {
		if !m.dropped.Swap(false) {
			return
		}
		if err := m.scan(ctx, rc); err != nil && ctx.Err() == nil {
			m.dropped.Store(true)
			// Not fatal: the edges stay migrating; the next tick scans again.
			m.log.Warn("re-read migrating icp edges", zap.Error(err))
		}
	}
	scan()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			scan()
		case w := <-m.wakes:
			m.insert(ctx, rc, w)
		}
	}
}

// insert queues jobs for w and for the wakes queued behind it, in one round trip: a burst of
// wakes (a gallery stored forever) costs one insert, not one per memory. A memory appears once
// per batch (the pipeline wakes it for each of its edges): River's unique insert cannot take the
// same job twice in one statement.
func (m *Mirror) insert(ctx context.Context, rc *river.Client[pgx.Tx], w wake) {
	var batch []river.InsertManyParams
	seen := map[wake]bool{}
	add := func(w wake) {
		if !seen[w] {
			seen[w] = true
			batch = append(batch, river.InsertManyParams{Args: args{MemoryID: w.id, MemoryType: w.typ}, InsertOpts: m.insertOpts()})
		}
	}
	add(w)
more:
	for len(batch) < scanBatch {
		select {
		case w := <-m.wakes:
			add(w)
		default:
			break more
		}
	}
	if _, err := rc.InsertMany(ctx, batch); err != nil && ctx.Err() == nil {
		m.dropped.Store(true)
		first := batch[0].Args.(args)
		m.log.Warn("queue icp mirror jobs; the migrating edges are re-read", zap.Error(err),
			zap.Int("jobs", len(batch)), zap.String("memory_id", first.MemoryID), zap.String("memory_type", first.MemoryType))
	}
}

// scan queues a job for every memory with a migrating icp-canister edge.
func (m *Mirror) scan(ctx context.Context, rc *river.Client[pgx.Tx]) error {
	rows, err := m.pool.Query(ctx, `SELECT DISTINCT memory_id::text, memory_type::text FROM storage_edges
		WHERE backend = $1 AND sync_state = $2`, domain.BackendICP, domain.SyncMigrating)
	if err != nil {
		return fmt.Errorf("scan migrating icp edges: %w", err)
	}
	var batch []river.InsertManyParams
	var id, typ string
	_, err = pgx.ForEachRow(rows, []any{&id, &typ}, func() error {
		if _, ok := m.tables[typ]; !ok {
			m.log.Warn("migrating icp edge of a memory type without a table mapping; left alone",
				zap.String("memory_id", id), zap.String("memory_type", typ))
			return nil
		}
		batch = append(batch, river.InsertManyParams{Args: args{MemoryID: id, MemoryType: typ}, InsertOpts: m.insertOpts()})
		return nil
	})
	if err != nil {
		return fmt.Errorf("scan migrating icp edges: %w", err)
	}
	queued := 0
	for len(batch) > 0 {
		n := min(len(batch), scanBatch)
		res, err := rc.InsertMany(ctx, batch[:n])
		if err != nil {
			return fmt.Errorf("queue icp mirror jobs: %w", err)
		}
		for _, r := range res {
			if !r.UniqueSkippedAsDuplicate {
				queued++
			}
		}
		batch = batch[n:]
	}
	m.log.Info("queued memories with migrating icp edges", zap.Int("queued", queued))
	return nil
}

func (m *Mirror) insertOpts() *river.InsertOpts {
	return &river.InsertOpts{
		Queue:       Queue,
		MaxAttempts: m.cfg.MaxAttempts,
		UniqueOpts: river.UniqueOpts{
			ByArgs: true,
			// Not completed, cancelled or discarded: a finished job must not swallow the next
			// "store forever" or reconcile's retry of the same memory.
			ByState: []rivertype.JobState{rivertype.JobStateAvailable, rivertype.JobStatePending,
				rivertype.JobStateRunning, rivertype.JobStateRetryable, rivertype.JobStateScheduled},
		},
	}
}

// connect builds the canister client, retrying with capped exponential backoff while the replica
// is unreachable (it may be down when the daemon starts). It fails only when ctx ends.
func (m *Mirror) connect(ctx context.Context) (*icp.Client, error) {
	var c *icp.Client
	op := func() error {
		var err error
		c, err = icp.New(m.cfg.ICP, m.log)
		return err
	}
	notify := func(err error, wait time.Duration) {
		m.log.Warn("ICP replica unreachable; the mirror waits", zap.Error(err), zap.Duration("retry_in", wait))
	}
	bo := backoff.NewExponentialBackOff(backoff.WithMaxInterval(connectBackoffMax), backoff.WithMaxElapsedTime(0))
	if err := backoff.RetryNotify(op, backoff.WithContext(bo, ctx), notify); err != nil {
		return nil, err
	}
	return c, nil
}
