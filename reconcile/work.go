package reconcile

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/edgesync/edgesync/domain"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// work finds (and unless the run is dry, repairs) everything CONTRACT
// section 6 lists. The edges of section 4 go first, chunk by chunk over the
// memory-id key space; then the sync states; then the bounded ICP check.
func (s *Service) work(ctx context.Context, l *lease, progress func(done, total int64)) (*Report, error) {
	db := l.conn
	rep := &Report{ByType: map[string]*Counts{}}
	for _, t := range s.tables {
		rep.ByType[t.MemoryType] = &Counts{}
	}
	dry := l.run.DryRun
	keepICP := s.cfg.ICPEdgesOnDelete == PolicyKeep
	workers, err := s.connectWorkers(ctx)
	if err != nil {
		return rep, err
	}
	defer closeAll(workers)
	var mu sync.Mutex // guards rep.ByType counts across workers
	err = s.walk(ctx, db, workers, progress, func(ctx context.Context, conn *pgx.Conn, sp span) error {
		for _, t := range s.tables {
			var c Counts
			if dry {
				if err := s.detect(ctx, conn, t, sp, keepICP, &c); err != nil {
					return err
				}
			} else {
				n, err := s.exec(ctx, conn, "delete orphans of "+t.Name, t.deleteOrphans(sp, keepICP))
				if err != nil {
					return err
				}
				c.Orphans = n
				if c.Missing, c.Drift, err = s.repair(ctx, conn, t, sp); err != nil {
					return err
				}
			}
			mu.Lock()
			bt := rep.ByType[t.MemoryType]
			bt.Orphans += c.Orphans
			bt.Missing += c.Missing
			bt.Drift += c.Drift
			mu.Unlock()
		}
		return nil
	})
	for _, c := range rep.ByType {
		rep.Orphans += c.Orphans
		rep.Missing += c.Missing
		rep.Drift += c.Drift
	}
	if !dry {
		rep.Fixed = rep.Orphans + rep.Missing + rep.Drift
	}
	if err != nil {
		return rep, err
	}
	if err := s.syncStates(ctx, db, rep, dry); err != nil {
		return rep, err
	}
	if err := s.checkICP(ctx, db, rep, dry); err != nil {
		return rep, err
	}
	return rep, nil
}

// connectWorkers opens the connections that repair chunks side by side.
// Chunks are disjoint key ranges, so workers never touch the same rows.
func (s *Service) connectWorkers(ctx context.Context) ([]*pgx.Conn, error) {
	var conns []*pgx.Conn
	for range s.cfg.Workers {
		c, err := s.connect(ctx)
		if err != nil {
			closeAll(conns)
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

func closeAll(conns []*pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, c := range conns {
		_ = c.Close(ctx)
	}
}

// detect counts what a repair of the span would change, changing nothing.
func (s *Service) detect(ctx context.Context, db *pgx.Conn, t table, sp span, keepICP bool, c *Counts) error {
	st := t.countOrphans(sp, keepICP)
	var n int64
	if err := db.QueryRow(ctx, st.q, st.a...).Scan(&n); err != nil {
		return fmt.Errorf("count orphans of %s: %w", t.Name, err)
	}
	c.Orphans += n
	st = t.countMissingDrift(sp)
	var missing, drift int64
	if err := db.QueryRow(ctx, st.q, st.a...).Scan(&missing, &drift); err != nil {
		return fmt.Errorf("count missing and drifted edges of %s: %w", t.Name, err)
	}
	c.Missing += missing
	c.Drift += drift
	return nil
}

// exec runs one repair statement as its own short transaction and returns
// the rows it changed. A deadlock with the pipeline (which writes the same
// edges) aborts one side; the repair is idempotent, so it is simply retried.
func (s *Service) exec(ctx context.Context, db *pgx.Conn, what string, st stmt) (int64, error) {
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		sctx, done := settling(ctx)
		tag, err := db.Exec(sctx, st.q, st.a...)
		done()
		if err == nil {
			return tag.RowsAffected(), nil
		}
		if attempt < 5 && retryable(ctx, err) {
			continue
		}
		return 0, fmt.Errorf("%s: %w", what, err)
	}
}

// repair runs table.repair, retried like exec.
func (s *Service) repair(ctx context.Context, db *pgx.Conn, t table, sp span) (inserted, updated int64, err error) {
	st := t.repair(sp)
	for attempt := 1; ; attempt++ {
		if err = ctx.Err(); err != nil {
			break
		}
		sctx, done := settling(ctx)
		err = db.QueryRow(sctx, st.q, st.a...).Scan(&inserted, &updated)
		done()
		if err == nil || attempt >= 5 || !retryable(ctx, err) {
			break
		}
	}
	if err != nil {
		return 0, 0, fmt.Errorf("repair the edges of %s: %w", t.Name, err)
	}
	return inserted, updated, nil
}

// settleGrace is how long a repair statement already sent may still run
// after its run was cancelled.
const settleGrace = 10 * time.Second

// settling returns the context for one repair statement: it outlives ctx by
// up to settleGrace, so a statement that was sent is awaited to its result
// and what it committed is counted in the report (cancelling it mid-way
// could commit the chunk on the server and still return the cancellation,
// leaving the report short of edges it had changed). A chunk's statement
// is short; the grace only bounds one stuck on a lock.
func settling(ctx context.Context) (context.Context, context.CancelFunc) {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	// Once ctx ends, cancel after the grace (a no-op if the statement was
	// done and cancelled by then).
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(settleGrace, cancel) })
	return sctx, func() { stop(); cancel() }
}

// retryable reports a deadlock or serialization failure: the pipeline writes
// the same edges, one side is aborted, and an idempotent repair can simply
// run again.
func retryable(ctx context.Context, err error) bool {
	var pe *pgconn.PgError
	return ctx.Err() == nil && errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

// walk calls fn for consecutive key ranges (lo, hi] of memory ids covering
// the whole uuid space, on the worker connections side by side. Each range
// holds at most ChunkSize rows of every memory table and of storage_edges,
// so every statement reads a bounded set and commits quickly, whatever the
// shape of the data (a table emptied with all its edges left behind yields
// bounded chunks too). The ranges are found on db, the lock connection.
//
// A source's look-ahead (the id ChunkSize rows on) stays valid until the
// walk passes it, so each source is scanned about once per run in total.
func (s *Service) walk(ctx context.Context, db *pgx.Conn, workers []*pgx.Conn, progress func(done, total int64),
	fn func(context.Context, *pgx.Conn, span) error) error {
	type source struct {
		what   string
		query  func(lo *string) stmt
		table  bool
		valid  bool
		bound  *string // nil: no more than count rows remain
		count  int64   // rows up to bound
		counts bool    // count already added to done
	}
	n := s.cfg.ChunkSize
	look := func(ident, col string) func(lo *string) stmt {
		return func(lo *string) stmt {
			var a args
			where := ""
			if lo != nil {
				where = " WHERE " + col + " > " + a.add(*lo) + "::text::uuid"
			}
			q := `SELECT count(*), max(` + col + `::text COLLATE "C") FROM (SELECT ` + col + ` FROM ` + ident + where +
				` ORDER BY ` + col + ` LIMIT ` + a.add(n) + `) s`
			return stmt{q, a}
		}
	}
	var srcs []*source
	for _, t := range s.tables {
		srcs = append(srcs, &source{what: t.Name, query: look(t.ident, "id"), table: true})
	}
	srcs = append(srcs, &source{what: "storage_edges", query: look("storage_edges", "memory_id")})

	total, err := s.estimateRows(ctx, db)
	if err != nil {
		return err
	}
	type job struct {
		sp   span
		rows int64 // memory rows it completes, for progress
	}
	var (
		mu   sync.Mutex
		done int64
	)
	jobs := make(chan job)
	g, gctx := errgroup.WithContext(ctx)
	for _, conn := range workers {
		g.Go(func() error {
			for j := range jobs {
				if err := fn(gctx, conn, j.sp); err != nil {
					return err
				}
				if progress != nil {
					mu.Lock()
					done += j.rows
					total = max(total, done)
					progress(done, total)
					mu.Unlock()
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(jobs)
		var lo *string
		for {
			var hi *string
			for _, src := range srcs {
				if !src.valid {
					st := src.query(lo)
					var bound *string
					if err := db.QueryRow(gctx, st.q, st.a...).Scan(&src.count, &bound); err != nil {
						return fmt.Errorf("find the next chunk of %s: %w", src.what, err)
					}
					src.valid, src.bound, src.counts = true, nil, false
					if src.count >= int64(n) {
						src.bound = bound
					}
				}
				if src.bound != nil && (hi == nil || *src.bound < *hi) {
					hi = src.bound
				}
			}
			j := job{sp: span{lo: lo, hi: hi}}
			for _, src := range srcs {
				reached := hi == nil || (src.bound != nil && *src.bound == *hi)
				if reached && src.table && !src.counts {
					j.rows += src.count
					src.counts = true
				}
				if hi != nil && src.bound != nil && *src.bound == *hi {
					src.valid = false
				}
			}
			select {
			case jobs <- j:
			case <-gctx.Done():
				return gctx.Err()
			}
			if hi == nil {
				return nil
			}
			lo = hi
		}
	})
	err = g.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// estimateRows is the progress total: the planner's row estimates, or a
// count for tables never analysed.
func (s *Service) estimateRows(ctx context.Context, db *pgx.Conn) (int64, error) {
	var total int64
	for _, t := range s.tables {
		var est float64
		if err := db.QueryRow(ctx, `SELECT reltuples FROM pg_class WHERE oid = $1::text::regclass`, t.ident).Scan(&est); err != nil {
			return 0, fmt.Errorf("table %s (check EDGESYNC_TABLES): %w", t.Name, err)
		}
		if est < 0 {
			var n int64
			if err := db.QueryRow(ctx, `SELECT count(*) FROM `+t.ident).Scan(&n); err != nil {
				return 0, fmt.Errorf("count %s: %w", t.Name, err)
			}
			est = float64(n)
		}
		total += int64(est)
	}
	return total, nil
}

// syncStates handles stuck and due failed syncs, in bounded batches.
func (s *Service) syncStates(ctx context.Context, db *pgx.Conn, rep *Report, dry bool) error {
	stuckAfter := s.cfg.StuckAfter.Microseconds()
	if dry {
		if err := db.QueryRow(ctx, `SELECT count(*) FROM storage_edges
			WHERE sync_state = 'migrating' AND updated_at < now() - $1::bigint * interval '1 microsecond'`, stuckAfter).Scan(&rep.Stuck); err != nil {
			return fmt.Errorf("count stuck syncs: %w", err)
		}
		if err := db.QueryRow(ctx, `SELECT count(*) FROM storage_edges e
			JOIN sync_attempts a ON a.memory_id = e.memory_id AND a.memory_type = e.memory_type AND a.backend = e.backend
			WHERE e.sync_state = 'failed' AND e.backend = $1 AND a.next_attempt_at <= now()`, domain.BackendICP).Scan(&rep.FailedRetried); err != nil {
			return fmt.Errorf("count failed syncs due for a retry: %w", err)
		}
		return nil
	}
	note := fmt.Sprintf("stuck in migrating for more than %s (reconcile set it back to be retried)", s.cfg.StuckAfter)
	for {
		var gaveUp, touched int64
		if err := db.QueryRow(ctx, stuckSQL, stuckAfter, s.cfg.ChunkSize, s.cfg.MaxAttempts, note).Scan(&gaveUp, &touched); err != nil {
			return fmt.Errorf("handle stuck syncs: %w", err)
		}
		rep.Stuck += gaveUp + touched
		rep.Fixed += gaveUp + touched
		if gaveUp+touched < int64(s.cfg.ChunkSize) {
			break
		}
	}
	for {
		n, err := s.exec(ctx, db, "retry failed syncs", stmt{retrySQL, args{domain.BackendICP, s.cfg.ChunkSize}})
		if err != nil {
			return err
		}
		rep.FailedRetried += n
		rep.Fixed += n
		if n == 0 {
			return nil
		}
	}
}

// stuckSQL: $1 stuck-after in microseconds, $2 batch size, $3 max attempts,
// $4 the note for a sync that never recorded an error. Edges the mirror is
// writing right now are skipped (SKIP LOCKED), and FOR UPDATE re-checks the
// state on the latest version, so a sync that just finished is left alone.
// Touching updated_at is the retry: the mirror re-picks a migrating edge
// when it changes. sync_attempts gets one attempt per memory and backend.
const stuckSQL = `WITH stuck AS (
  SELECT e.id, coalesce(a.attempts, 0) AS attempts, a.last_error
  FROM storage_edges e
  LEFT JOIN sync_attempts a ON a.memory_id = e.memory_id AND a.memory_type = e.memory_type AND a.backend = e.backend
  WHERE e.sync_state = 'migrating' AND e.updated_at < now() - $1::bigint * interval '1 microsecond'
  ORDER BY e.memory_id, e.id
  LIMIT $2
  FOR UPDATE OF e SKIP LOCKED
), gave_up AS (
  UPDATE storage_edges e SET sync_state = 'failed',
    sync_error = format('gave up after %s attempts: %s; fix the cause, then ask for Store Forever again (POST /api/memories/%s/%s/store-forever)',
      s.attempts, coalesce(s.last_error, 'no error was recorded (the sync never finished)'), e.memory_type, e.memory_id)
  FROM stuck s WHERE e.id = s.id AND s.attempts >= $3
  RETURNING e.memory_id, e.memory_type, e.backend
), no_more AS (
  UPDATE sync_attempts a SET next_attempt_at = NULL, updated_at = now()
  FROM (SELECT DISTINCT memory_id, memory_type, backend FROM gave_up) g
  WHERE a.memory_id = g.memory_id AND a.memory_type = g.memory_type AND a.backend = g.backend
), touched AS (
  UPDATE storage_edges e SET updated_at = now()
  FROM stuck s WHERE e.id = s.id AND s.attempts < $3
  RETURNING e.memory_id, e.memory_type, e.backend
), bumped AS (
  INSERT INTO sync_attempts AS a (memory_id, memory_type, backend, attempts, last_error, updated_at)
  SELECT DISTINCT memory_id, memory_type, backend, 1, $4::text, now() FROM touched
  ON CONFLICT (memory_id, memory_type, backend) DO UPDATE
    SET attempts = a.attempts + 1, updated_at = now(), last_error = coalesce(a.last_error, EXCLUDED.last_error)
)
SELECT (SELECT count(*) FROM gave_up), (SELECT count(*) FROM touched)`

// retrySQL: $1 the backend (icp-canister), $2 batch size (memories). The
// mirror sets next_attempt_at when a round of attempts failed and leaves it
// NULL when the rounds are spent, so "due" is the whole rule. The memory's
// failed edges become migrating (the pipeline wakes the mirror on that edge
// event) and a new round starts: attempts 0, next_attempt_at NULL (rounds is
// kept, so the backoff keeps growing). sync_error stays until the mirror
// succeeds, so a person still sees why the last attempt failed.
const retrySQL = `WITH due AS (
  SELECT a.memory_id, a.memory_type, a.backend FROM sync_attempts a
  WHERE a.backend = $1 AND a.next_attempt_at <= now()
    AND EXISTS (SELECT 1 FROM storage_edges e WHERE e.memory_id = a.memory_id AND e.memory_type = a.memory_type
      AND e.backend = a.backend AND e.sync_state = 'failed')
  ORDER BY a.next_attempt_at
  LIMIT $2
  FOR UPDATE OF a SKIP LOCKED
), new_round AS (
  UPDATE sync_attempts a SET attempts = 0, next_attempt_at = NULL, updated_at = now()
  FROM due d WHERE a.memory_id = d.memory_id AND a.memory_type = d.memory_type AND a.backend = d.backend
)
UPDATE storage_edges e SET sync_state = 'migrating'
FROM due d WHERE e.memory_id = d.memory_id AND e.memory_type = d.memory_type AND e.backend = d.backend
  AND e.sync_state = 'failed'`

// checkICP compares a bounded batch of edges present on icp-canister with the
// canister, continuing where the previous run stopped. A disagreeing edge is
// set back to migrating (not present), which asks the mirror to store the
// memory again.
func (s *Service) checkICP(ctx context.Context, db *pgx.Conn, rep *Report, dry bool) error {
	if s.cfg.ICP == nil {
		return nil
	}
	s.mu.Lock()
	cursor := s.icpCursor
	s.mu.Unlock()
	var a args
	after := ""
	if cursor != "" {
		after = " AND memory_id > " + a.add(cursor) + "::text::uuid"
	}
	rows, err := db.Query(ctx, `WITH mems AS (
		  SELECT DISTINCT memory_id FROM storage_edges
		  WHERE backend = 'icp-canister' AND present AND sync_state = 'idle'`+after+`
		  ORDER BY memory_id LIMIT `+a.add(s.cfg.ICPBatch)+`)
		SELECT e.id::text, e.memory_id::text, e.artifact::text, e.content_hash, e.size_bytes
		FROM storage_edges e JOIN mems USING (memory_id)
		WHERE e.backend = 'icp-canister' AND e.present AND e.sync_state = 'idle'
		ORDER BY e.memory_id`, a...)
	if err != nil {
		return fmt.Errorf("read icp edges: %w", err)
	}
	type edge struct {
		id, memoryID, artifact string
		hash                   *string
		size                   *int64
	}
	var edges []edge
	for rows.Next() {
		var e edge
		if err := rows.Scan(&e.id, &e.memoryID, &e.artifact, &e.hash, &e.size); err != nil {
			rows.Close()
			return fmt.Errorf("read icp edges: %w", err)
		}
		edges = append(edges, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read icp edges: %w", err)
	}

	next, memories := "", 0
	var status ICPStatus
	for i, e := range edges {
		if i == 0 || e.memoryID != edges[i-1].memoryID {
			memories++
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			status, err = s.cfg.ICP.Status(cctx, e.memoryID)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				// The canister being unreachable is the mirror's problem to
				// report; the web2 repairs of this run still count.
				s.log.Warn("icp check stopped: the canister did not answer", zap.String("memory_id", e.memoryID), zap.Error(err))
				next = cursor // retry this batch next run
				break
			}
			next = e.memoryID
		}
		obj := status.Metadata
		if e.artifact == domain.ArtifactAsset {
			obj = status.Asset
		}
		reason := icpDisagreement(obj, e.hash, e.size)
		if reason == "" {
			continue
		}
		rep.ICPDrift++
		if dry {
			continue
		}
		tag, err := db.Exec(ctx, `UPDATE storage_edges SET present = false, sync_state = 'migrating', sync_error = $2
			WHERE id = $1::text::uuid AND present AND sync_state = 'idle' AND content_hash IS NOT DISTINCT FROM $3`,
			e.id, "the canister disagrees ("+reason+"); reconcile asked the mirror to store it again", e.hash)
		if err != nil {
			return fmt.Errorf("mark icp edge %s for a new sync: %w", e.id, err)
		}
		rep.Fixed += tag.RowsAffected()
	}
	if memories < s.cfg.ICPBatch && next != cursor {
		next = "" // the whole table was covered: start over next run
	}
	if !dry {
		s.mu.Lock()
		s.icpCursor = next
		s.mu.Unlock()
	}
	return nil
}

// icpDisagreement says why an edge present on ICP does not match the
// canister, or "" when it does.
func icpDisagreement(obj ICPObject, hash *string, size *int64) string {
	switch {
	case !obj.Present:
		return "not stored on the canister"
	case hash != nil && obj.Hash != "" && *hash != obj.Hash:
		return fmt.Sprintf("content hash %s on the canister, %s on the edge", obj.Hash, *hash)
	case size != nil && obj.Size > 0 && *size != obj.Size:
		return fmt.Sprintf("%d bytes on the canister, %d on the edge", obj.Size, *size)
	}
	return ""
}
