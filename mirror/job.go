package mirror

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"time"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/icp"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"go.uber.org/zap"
)

// args are a job's arguments: the memory, nothing else, so that uniqueness by args means
// one job per memory.
type args struct {
	MemoryID   string `json:"memory_id"`
	MemoryType string `json:"memory_type"`
}

func (args) Kind() string { return JobKind }

// worker runs mirror jobs for m.
type worker struct {
	river.WorkerDefaults[args]
	m *Mirror
}

var _ river.Worker[args] = (*worker)(nil)

func (w *worker) Timeout(*river.Job[args]) time.Duration { return w.m.cfg.JobTimeout }

func (w *worker) NextRetry(job *river.Job[args]) time.Time {
	return time.Now().Add(w.m.retryDelay(job.ID, job.Attempt))
}

// retryDelay is RetryBase·2^(attempt-1), capped at RetryMax, with ±10% jitter so that memories
// failing together (a canister outage) do not all come back in the same instant. The jitter is
// derived from the job and attempt, so NextRetry and sync_attempts.next_attempt_at agree.
func (m *Mirror) retryDelay(jobID int64, attempt int) time.Duration {
	d := m.cfg.RetryBase
	for i := 1; i < attempt && d < m.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, m.cfg.RetryMax)
	h := fnv.New32a()
	fmt.Fprintf(h, "%d/%d", jobID, attempt)
	jitter := float64(h.Sum32()%2001)/10000 - 0.1 // -0.1 … +0.1
	return d + time.Duration(float64(d)*jitter)
}

func (w *worker) Work(ctx context.Context, job *river.Job[args]) error {
	m := w.m
	a := job.Args
	client := m.client.Load()
	if client == nil {
		return errNotConnected // Run starts the workers only once connected
	}
	log := m.log.With(zap.String("memory_id", a.MemoryID), zap.String("memory_type", a.MemoryType),
		zap.Int64("job", job.ID), zap.Int("attempt", job.Attempt))
	err := m.sync(ctx, client, job, log)
	switch {
	case err == nil:
		m.metrics.jobs.WithLabelValues(resultOK).Inc()
		return nil
	case errors.Is(err, errUnsettled):
		// Work was done, the edges just keep changing: run again soon, without costing an attempt.
		m.metrics.jobs.WithLabelValues(resultOK).Inc()
		return river.JobSnooze(time.Second)
	case m.stopping.Load() && ctx.Err() != nil:
		// Shutdown, not a failure: the job is available again at once, costs no attempt, and
		// the next start resumes the upload from the chunks the canister holds.
		log.Info("icp mirror interrupted by shutdown; resumes on the next start")
		return river.JobSnooze(0)
	}
	return m.fail(ctx, job, log, err)
}

// fail records a failed attempt for people (sync_error, sync_attempts) and tells River what
// next: retry with backoff, or stop when the attempts are spent or retrying cannot help.
func (m *Mirror) fail(ctx context.Context, job *river.Job[args], log *zap.Logger, err error) error {
	p := explain(err, m.cfg)
	final := p.permanent || job.Attempt >= job.MaxAttempts
	m.metrics.uploadFailures.Inc()
	// The attempt's own context may be what ended (job timeout); the record must still be written.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), failureRecordingTimeout)
	defer cancel()
	if !final {
		next := time.Now().Add(m.retryDelay(job.ID, job.Attempt))
		if recErr := m.recordRetry(rctx, job.Args, p.note, next); recErr != nil {
			log.Error("record icp mirror failure", zap.Error(recErr))
		}
		m.metrics.jobs.WithLabelValues(resultRetry).Inc()
		log.Warn("icp mirror attempt failed; will retry", zap.String("sync_error", p.note),
			zap.Time("next_attempt_at", next), zap.Error(err))
		return err
	}
	note, recErr := m.recordFinal(rctx, job.Args, p, job.Attempt)
	if recErr != nil {
		log.Error("record icp mirror failure", zap.Error(recErr))
	}
	m.metrics.jobs.WithLabelValues(resultFailed).Inc()
	log.Warn("icp mirror failed; edges set failed", zap.String("sync_error", note), zap.Error(err))
	if p.permanent {
		return river.JobCancel(err)
	}
	return err // River discards a job whose last attempt failed
}

// roundDelay is the wait after failed round n (1-based) before reconcile starts the next one:
// RoundBase·2^(n-1), capped at RoundMax.
func (m *Mirror) roundDelay(n int) time.Duration {
	d := m.cfg.RoundBase
	for i := 1; i < n && d < RoundMax; i++ {
		d *= 2
	}
	return min(d, RoundMax)
}

// finalNote is the sync_error of a failed round: what failed, and when edgesync tries again, or
// that it no longer does and what a person should do. next is nil when nothing is scheduled.
func (m *Mirror) finalNote(p problem, attempts, round int, now time.Time) (note string, next *time.Time) {
	switch {
	case p.permanent:
		return p.note, nil
	case round < m.cfg.MaxRounds:
		t := now.Add(m.roundDelay(round))
		return fmt.Sprintf("%s (round %d of %d gave up after %d attempts; edgesync tries again after %s, or ask for Store Forever again once fixed)",
			p.note, round, m.cfg.MaxRounds, attempts, t.UTC().Format(time.RFC3339)), &t
	default:
		return fmt.Sprintf("%s (gave up after %d attempts in each of %d rounds; edgesync no longer retries by itself: fix the cause, then ask for Store Forever again)",
			p.note, attempts, round), nil
	}
}

// recordRetrySQL counts the attempt and writes the note on the memory's migrating icp edges,
// which stay migrating: River retries at next_attempt_at.
const recordRetrySQL = `WITH attempt AS (
	INSERT INTO sync_attempts AS s (memory_id, memory_type, backend, attempts, last_error, next_attempt_at, updated_at)
	VALUES ($1, $2, $5, 1, $3, $4, now())
	ON CONFLICT (memory_id, memory_type, backend) DO UPDATE
	SET attempts = s.attempts + 1, last_error = EXCLUDED.last_error,
	    next_attempt_at = EXCLUDED.next_attempt_at, updated_at = now()
)
UPDATE storage_edges SET sync_error = $3
WHERE memory_id = $1 AND memory_type = $2 AND backend = $5 AND sync_state = $6`

func (m *Mirror) recordRetry(ctx context.Context, a args, note string, next time.Time) error {
	_, err := m.pool.Exec(ctx, recordRetrySQL, a.MemoryID, a.MemoryType, note, next, domain.BackendICP, domain.SyncMigrating)
	return err
}

// recordFinalSQL ends a round: the attempt and the round are counted, next_attempt_at is when
// reconcile starts the next round (NULL: never), and the memory's migrating icp edges fail.
const recordFinalSQL = `WITH attempt AS (
	INSERT INTO sync_attempts AS s (memory_id, memory_type, backend, attempts, rounds, last_error, next_attempt_at, updated_at)
	VALUES ($1, $2, $5, 1, $6, $3, $4, now())
	ON CONFLICT (memory_id, memory_type, backend) DO UPDATE
	SET attempts = s.attempts + 1, rounds = EXCLUDED.rounds, last_error = EXCLUDED.last_error,
	    next_attempt_at = EXCLUDED.next_attempt_at, updated_at = now()
)
UPDATE storage_edges SET sync_error = $3, sync_state = $7
WHERE memory_id = $1 AND memory_type = $2 AND backend = $5 AND sync_state = $8`

// recordFinal ends the round in one transaction with the read of the rounds already spent, and
// returns the note it wrote.
func (m *Mirror) recordFinal(ctx context.Context, a args, p problem, attempts int) (string, error) {
	note := p.note
	err := pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		var spent int
		err := tx.QueryRow(ctx, `SELECT rounds FROM sync_attempts WHERE memory_id = $1 AND memory_type = $2 AND backend = $3 FOR UPDATE`,
			a.MemoryID, a.MemoryType, domain.BackendICP).Scan(&spent)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		var next *time.Time
		note, next = m.finalNote(p, attempts, spent+1, time.Now())
		_, err = tx.Exec(ctx, recordFinalSQL, a.MemoryID, a.MemoryType, note, next, domain.BackendICP, spent+1,
			domain.SyncFailed, domain.SyncMigrating)
		return err
	})
	return note, err
}

// memoryRow is what a job reads of the memory.
type memoryRow struct {
	json []byte
	url  *string
	size *int64
}

// errMemoryGone says the memory row no longer exists.
var errMemoryGone = errors.New("memory row not found")

// errNoAssetURL says an asset edge is migrating but the row has no asset URL.
var errNoAssetURL = errors.New("asset edge migrating but the memory has no asset URL")

// errUnsettled says edges kept becoming migrating while the job ran; it goes round once more.
var errUnsettled = errors.New("icp edges kept changing while the job ran")

// maxPasses bounds how often one job goes round for edges that became migrating while it ran.
const maxPasses = 3

// sync mirrors what the memory's migrating icp-canister edges ask for: metadata, then the asset.
// Every step is idempotent (the canister answers AlreadyExists with the stored hash), so a retry
// or a second job for the same memory redoes nothing that is done.
//
// The job completes itself in the transaction that finds no migrating edge left (see complete).
// That closes the lost-wake gap: a wake for an edge set migrating while this job runs is dropped
// as a duplicate of it, so this job must either see that edge and go round again, or complete
// before the wake's insert, which then makes a new job.
func (m *Mirror) sync(ctx context.Context, client *icp.Client, job *river.Job[args], log *zap.Logger) error {
	a := job.Args
	t, ok := m.tables[a.MemoryType]
	if !ok {
		return fmt.Errorf("memory type %q has no table mapping", a.MemoryType)
	}
	if !icp.ValidUUID(a.MemoryID) {
		return fmt.Errorf("%w: %q", icp.ErrInvalidUUID, a.MemoryID)
	}
	// The first pass reads the edges and the row in one round trip; a later one (edges that became
	// migrating while the job ran, perhaps for a new URL) reads the row again.
	want, row, err := m.readJob(ctx, t, a)
	if err != nil {
		return err
	}
	for pass := range maxPasses {
		if len(want) > 0 {
			if pass > 0 {
				log.Debug("icp edges became migrating while the job ran; another pass")
				if row, err = m.readRow(ctx, t, a.MemoryID); err != nil {
					return err
				}
			}
			if row == nil {
				return errMemoryGone
			}
			if err := m.store(ctx, client, a, want, *row, log); err != nil {
				return err
			}
		}
		if want, err = m.complete(ctx, job); err != nil || len(want) == 0 {
			return err
		}
	}
	return errUnsettled
}

// store does one pass: the artifacts in want. When both are wanted, the metadata goes up while
// the asset downloads (the download of a large asset takes long, a metadata call a few
// milliseconds on a fast link and seconds on mainnet: either hides the other), and both edges
// are marked in one statement. A metadata failure stops the asset, as when the two ran one
// after the other (an unauthorized daemon or a conflict would only waste the download), and is
// the error reported; an asset already stored by then is marked all the same.
func (m *Mirror) store(ctx context.Context, client *icp.Client, a args, want map[string]bool, row memoryRow, log *zap.Logger) error {
	putMetadata := func() (storedArtifact, error) {
		hash, err := client.PutMetadata(ctx, a.MemoryID, row.json)
		if err != nil {
			return storedArtifact{}, &stepError{step: domain.ArtifactMetadata, err: err}
		}
		return storedArtifact{artifact: domain.ArtifactMetadata, hash: hash, size: int64(len(row.json))}, nil
	}
	var done []storedArtifact
	var metaErr, assetErr error
	switch {
	case want[domain.ArtifactAsset]:
		assetCtx, stopAsset := context.WithCancel(ctx)
		defer stopAsset()
		var meta chan error
		var metaDone storedArtifact
		if want[domain.ArtifactMetadata] {
			meta = make(chan error, 1)
			go func() {
				var err error
				if metaDone, err = putMetadata(); err != nil {
					stopAsset()
				}
				meta <- err
			}()
		}
		var asset storedArtifact
		asset, assetErr = m.syncAsset(assetCtx, client, a, row, log)
		if meta != nil {
			if metaErr = <-meta; metaErr == nil {
				done = append(done, metaDone)
			}
		}
		if assetErr == nil {
			done = append(done, asset)
		}
	case want[domain.ArtifactMetadata]:
		var meta storedArtifact
		if meta, metaErr = putMetadata(); metaErr == nil {
			done = append(done, meta)
		}
	}
	if len(done) > 0 {
		if err := m.markStored(ctx, a, done, metaErr == nil && assetErr == nil); err != nil {
			return err
		}
	}
	if err := cmp.Or(metaErr, assetErr); err != nil {
		return err
	}
	log.Debug("icp mirror pass done", zap.Bool("metadata", want[domain.ArtifactMetadata]), zap.Bool("asset", want[domain.ArtifactAsset]))
	return nil
}

// errEdgesMigrating rolls back a completion that found edges still migrating.
var errEdgesMigrating = errors.New("icp edges still migrating")

// complete marks the job completed, in one transaction with the check that no icp edge of the
// memory is migrating; if some are, it rolls back and returns them for another pass. The job row
// is updated before the check: a wake racing with us either waits on that row lock and, once we
// commit, inserts a new job, or ran before it, in which case its edge change is visible to the
// check.
func (m *Mirror) complete(ctx context.Context, job *river.Job[args]) (migrating map[string]bool, err error) {
	err = pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		if _, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job); err != nil {
			return fmt.Errorf("complete job: %w", err)
		}
		if migrating, err = m.migratingArtifacts(ctx, tx, job.Args); err != nil {
			return err
		}
		if len(migrating) > 0 {
			return errEdgesMigrating
		}
		return nil
	})
	if errors.Is(err, errEdgesMigrating) {
		return migrating, nil
	}
	return nil, err
}

// syncAsset downloads the asset and uploads it; the caller marks its edge.
func (m *Mirror) syncAsset(ctx context.Context, client *icp.Client, a args, row memoryRow, log *zap.Logger) (storedArtifact, error) {
	if row.url == nil || *row.url == "" {
		return storedArtifact{}, errNoAssetURL
	}
	if row.size != nil && *row.size > m.cfg.AssetMaxBytes {
		return storedArtifact{}, &FetchError{URL: *row.url, TooLarge: true, Size: *row.size, Limit: m.cfg.AssetMaxBytes}
	}
	b, err := m.fetcher.fetch(ctx, *row.url)
	if err != nil {
		return storedArtifact{}, err
	}
	defer func() {
		if err := b.Close(); err != nil {
			log.Warn("remove downloaded asset", zap.Error(err))
		}
	}()
	if row.size != nil && *row.size != b.size {
		// The size column is the app's claim; the bytes are the truth. Worth a note, not a failure.
		log.Info("asset size differs from the memory row", zap.Int64("row_size", *row.size), zap.Int64("downloaded", b.size))
	}

	m.metrics.uploading.Inc()
	defer m.metrics.uploading.Dec()
	stopBeat := m.heartbeat(ctx, a, log)
	defer stopBeat()
	if _, err := client.UploadAsset(ctx, a.MemoryID, b, b.size, b.hash, m.progress(a)); err != nil {
		return storedArtifact{}, &stepError{step: domain.ArtifactAsset, err: err}
	}
	return storedArtifact{artifact: domain.ArtifactAsset, hash: b.hash, size: b.size}, nil
}

// progress returns the upload's progress callback: it counts the bytes actually sent and publishes
// the progress at most every progressInterval, and always at the end.
func (m *Mirror) progress(a args) func(done, total int64) {
	var mu sync.Mutex
	var last time.Time
	var sent, base int64 = 0, -1
	return func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if base < 0 {
			base = done // the first call reports what the canister already held
		} else if done > base+sent {
			m.metrics.uploadBytes.Add(float64(done - base - sent))
			sent = done - base
		}
		if m.publish == nil || (done != total && time.Since(last) < progressInterval) {
			return
		}
		last = time.Now()
		body, err := json.Marshal(cdc.ProgressEvent{MemoryID: a.MemoryID, MemoryType: a.MemoryType, BytesDone: done, BytesTotal: total, At: last.UTC()})
		if err == nil {
			err = m.publish(m.cfg.Subjects.SyncProgress(), body)
		}
		if err != nil {
			// Progress is advisory: a lost message costs nothing the next one does not repair.
			m.log.Debug("publish icp progress", zap.Error(err))
		}
	}
}

// heartbeat touches the memory's migrating icp edges every Heartbeat until stopped, so that a
// long upload is not taken for stuck by reconcile.
func (m *Mirror) heartbeat(ctx context.Context, a args, log *zap.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(m.cfg.Heartbeat)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if _, err := m.pool.Exec(ctx, `UPDATE storage_edges SET updated_at = now()
					WHERE memory_id = $1 AND memory_type = $2 AND backend = $3 AND sync_state = $4`,
					a.MemoryID, a.MemoryType, domain.BackendICP, domain.SyncMigrating); err != nil && ctx.Err() == nil {
					log.Debug("touch migrating icp edges", zap.Error(err))
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// querier is what migratingArtifacts needs of a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// migratingSQL lists the memory's icp edges that are migrating.
const migratingSQL = `SELECT artifact::text FROM storage_edges
	WHERE memory_id = $1 AND memory_type = $2 AND backend = $3 AND sync_state = $4`

func (m *Mirror) migratingArtifacts(ctx context.Context, q querier, a args) (map[string]bool, error) {
	rows, err := q.Query(ctx, migratingSQL, a.MemoryID, a.MemoryType, domain.BackendICP, domain.SyncMigrating)
	if err != nil {
		return nil, fmt.Errorf("read migrating icp edges: %w", err)
	}
	want := map[string]bool{}
	if err := collectArtifacts(rows, want); err != nil {
		return nil, fmt.Errorf("read migrating icp edges: %w", err)
	}
	return want, nil
}

// collectArtifacts adds the artifact of every row to want and closes rows.
func collectArtifacts(rows pgx.Rows, want map[string]bool) error {
	var artifact string
	_, err := pgx.ForEachRow(rows, []any{&artifact}, func() error { want[artifact] = true; return nil })
	return err
}

// rowQuery reads the memory row as JSON, with its asset URL and size. The session time zone is
// pinned to UTC (and float output to the shortest exact form) by rowSettings, so the document,
// and thus its hash, is the same from every daemon: the canister is write-once, and a different
// rendering of the same row would read as a conflict.
func rowQuery(t domain.Table) string {
	url, size := "NULL::text", "NULL::bigint"
	if t.URLColumn != "" {
		url = "t." + pgx.Identifier{t.URLColumn}.Sanitize() + "::text"
	}
	if t.SizeColumn != "" {
		size = "t." + pgx.Identifier{t.SizeColumn}.Sanitize() + "::bigint"
	}
	return fmt.Sprintf(`SELECT row_to_json(t)::text, %s, %s FROM %s t WHERE t.id = $1`, url, size, t.Ident())
}

// rowSettings go before rowQuery in the same batch: a batch is one implicit transaction, so the
// local settings hold for the query.
const rowSettings = `SELECT set_config('TimeZone', 'UTC', true), set_config('extra_float_digits', '1', true)`

// queueRow queues rowQuery on batch; *row is nil after the batch when the memory row is gone.
func queueRow(batch *pgx.Batch, t domain.Table, id string, row **memoryRow) {
	batch.Queue(rowSettings)
	batch.Queue(rowQuery(t), id).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var doc string
			r := &memoryRow{}
			if err := rows.Scan(&doc, &r.url, &r.size); err != nil {
				return err
			}
			r.json = []byte(doc)
			*row = r
		}
		return rows.Err()
	})
}

// readRow reads the memory row (see rowQuery); nil when it is gone.
func (m *Mirror) readRow(ctx context.Context, t domain.Table, id string) (*memoryRow, error) {
	var row *memoryRow
	batch := &pgx.Batch{}
	queueRow(batch, t, id, &row)
	if err := m.pool.SendBatch(ctx, batch).Close(); err != nil {
		return nil, fmt.Errorf("read %s %s: %w", t.Name, id, err)
	}
	return row, nil
}

// readJob reads, in one round trip, which icp edges of the memory are migrating and the memory
// row (nil when it is gone), which the job needs when any are.
func (m *Mirror) readJob(ctx context.Context, t domain.Table, a args) (map[string]bool, *memoryRow, error) {
	want := map[string]bool{}
	var row *memoryRow
	batch := &pgx.Batch{}
	batch.Queue(migratingSQL, a.MemoryID, a.MemoryType, domain.BackendICP, domain.SyncMigrating).Query(func(rows pgx.Rows) error {
		return collectArtifacts(rows, want)
	})
	queueRow(batch, t, a.MemoryID, &row)
	if err := m.pool.SendBatch(ctx, batch).Close(); err != nil {
		return nil, nil, fmt.Errorf("read the migrating icp edges and %s %s: %w", t.Name, a.MemoryID, err)
	}
	return want, row, nil
}

// storedArtifact is an artifact the canister holds: what its edge records.
type storedArtifact struct {
	artifact string
	hash     string
	size     int64
}

// markStoredSQL marks the edges of the stored artifacts ($3, $4, $5 in step) in one statement;
// with $6 the pass is done and its retry bookkeeping goes too.
const markStoredSQL = `WITH cleared AS (
	DELETE FROM sync_attempts WHERE $6::boolean AND memory_id = $1 AND memory_type = $2 AND backend = $7
), done AS (
	SELECT * FROM unnest($3::text[], $4::text[], $5::bigint[]) AS d(artifact, content_hash, size_bytes)
)
UPDATE storage_edges e
SET present = true, sync_state = $8, sync_error = NULL, content_hash = done.content_hash,
    size_bytes = done.size_bytes, last_synced_at = now()
FROM done
WHERE e.memory_id = $1 AND e.memory_type = $2 AND e.backend = $7 AND e.artifact = done.artifact::artifact_t`

// markStored records that the canister holds the artifacts of done, in one statement; with last,
// the pass is done and its retry bookkeeping goes in the same statement, so nobody sees a stored
// memory with attempts still counted. It is unconditional: if reconcile gave up on an edge
// meanwhile, the canister's answer is still the truth.
func (m *Mirror) markStored(ctx context.Context, a args, done []storedArtifact, last bool) error {
	artifacts := make([]string, len(done))
	hashes := make([]string, len(done))
	sizes := make([]int64, len(done))
	for i, d := range done {
		artifacts[i], hashes[i], sizes[i] = d.artifact, d.hash, d.size
	}
	if _, err := m.pool.Exec(ctx, markStoredSQL, a.MemoryID, a.MemoryType, artifacts, hashes, sizes, last,
		domain.BackendICP, domain.SyncIdle); err != nil {
		return fmt.Errorf("mark %s stored on icp: %w", strings.Join(artifacts, " and "), err)
	}
	return nil
}
