package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/edgesync/edgesync/domain"
)

// Defaults applied by New to zero fields of Config.
const (
	DefaultStuckAfter  = 15 * time.Minute
	DefaultMaxAttempts = 5
	DefaultChunkSize   = 20000
	DefaultICPBatch    = 500
	DefaultWorkers     = 2
	DefaultPrefix      = "edgesync"
)

// ICP edge policies on delete of a memory row (Config.ICPEdgesOnDelete).
const (
	PolicyKeep   = domain.PolicyKeep
	PolicyDelete = domain.PolicyDelete
)

// Config is what a Service needs. The daemon and the CLI translate the global
// configuration into it, so this package never imports config.
type Config struct {
	Tables []domain.Table
	// ICPEdgesOnDelete is "keep" (default) or "delete": whether icp-canister
	// edges of a deleted memory are kept or removed as orphans.
	ICPEdgesOnDelete string
	// StuckAfter: a migrating edge not updated for this long is stuck.
	StuckAfter time.Duration
	// MaxAttempts: a stuck sync with this many attempts is given up (failed).
	MaxAttempts int
	// ChunkSize bounds the rows of any one table (memory table or
	// storage_edges) that one repair statement reads.
	ChunkSize int
	// Workers is how many connections repair chunks side by side (default
	// 2, like Postgres's own max_parallel_workers_per_gather).
	Workers int
	// ICPBatch bounds how many memories one run asks the canister about.
	ICPBatch int
	// SubjectPrefix is the first token of the completion subject.
	SubjectPrefix string
	// Publish sends the completion event with its msg id (the same for the
	// same run, so a retried publish is stored once); nil: not published.
	Publish func(ctx context.Context, subject, msgID string, data []byte) error
	// PublishFor bounds how long a failing completion publish is retried
	// (default 1 minute: a NATS failover or a short outage).
	PublishFor time.Duration
	// ICP checks edges present on icp-canister against the canister; nil:
	// the check is off and icp_drift is 0.
	ICP ICPChecker
}

// ICPChecker reports what the memory-store canister holds for one memory.
// The ICP mirror implements it.
type ICPChecker interface {
	Status(ctx context.Context, memoryID string) (ICPStatus, error)
}

// ICPStatus is the canister's view of one memory.
type ICPStatus struct {
	Metadata ICPObject
	Asset    ICPObject
}

// ICPObject is one stored artifact. Hash and Size are compared only when both
// the canister and the edge know them.
type ICPObject struct {
	Present bool
	Hash    string
	Size    int64
}

// Validate reports every problem of the configuration, naming the field.
func (c Config) Validate() error {
	var errs []error
	for _, err := range domain.ValidateTables(c.Tables) {
		errs = append(errs, fmt.Errorf("tables: %w", err))
	}
	switch c.ICPEdgesOnDelete {
	case "", PolicyKeep, PolicyDelete:
	default:
		errs = append(errs, fmt.Errorf("icp_edges_on_delete: %q is not a policy (keep or delete)", c.ICPEdgesOnDelete))
	}
	if c.StuckAfter < 0 || c.MaxAttempts < 0 || c.ChunkSize < 0 || c.ICPBatch < 0 || c.Workers < 0 {
		errs = append(errs, errors.New("stuck_after, max_attempts, chunk_size, icp_batch and workers must not be negative"))
	}
	return errors.Join(errs...)
}

// lockKey is the advisory lock every reconcile run (and legacy import) holds.
// Derived from a fixed string so every process and version agrees on it.
var lockKey = func() int64 {
	h := fnv.New64a()
	h.Write([]byte("edgesync/reconcile"))
	return int64(h.Sum64())
}()

// Service runs reconciliation: on demand (RunNow, Start), on a schedule
// (RunEvery) and on NATS requests (ServeNATS).
type Service struct {
	cfg    Config
	cfgErr error
	tables []table
	pool   *pgxpool.Pool
	log    *zap.Logger
	m      *metrics

	// bg outlives the requests that Start runs for (an HTTP handler's
	// context ends with its response); Wait cancels it at shutdown.
	bg     context.Context
	stopBG context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	active bool // this process holds the lock
	// icpCursor is where the next run's bounded ICP check continues, so
	// consecutive runs cover every ICP edge in turn.
	icpCursor string

	// beforeWork, when set (tests), is called once a run holds the lock.
	beforeWork func(Run)
}

// New builds a Service; it does not touch the database. A configuration
// problem is reported by every later call (see Config.Validate).
func New(cfg Config, pool *pgxpool.Pool, logger *zap.Logger, reg prometheus.Registerer) *Service {
	if cfg.ICPEdgesOnDelete == "" {
		cfg.ICPEdgesOnDelete = PolicyKeep
	}
	if cfg.StuckAfter == 0 {
		cfg.StuckAfter = DefaultStuckAfter
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.ICPBatch == 0 {
		cfg.ICPBatch = DefaultICPBatch
	}
	if cfg.Workers == 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.SubjectPrefix == "" {
		cfg.SubjectPrefix = DefaultPrefix
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	s := &Service{cfg: cfg, pool: pool, log: logger.With(zap.String("component", "reconcile")), m: newMetrics(reg)}
	if err := cfg.Validate(); err != nil {
		s.cfgErr = fmt.Errorf("reconcile configuration: %w", err)
	} else {
		for _, t := range cfg.Tables {
			s.tables = append(s.tables, newTable(t))
		}
	}
	s.bg, s.stopBG = context.WithCancel(context.Background())
	return s
}

// lease is a held reconcile lock and the run it belongs to.
type lease struct {
	conn *pgx.Conn
	run  Run
}

// acquire takes the advisory lock on a connection of its own (not a pool
// connection: a session lock must stay on one session, and a long run must
// not hold a pool slot). The run's statements use that connection too, so
// a broken connection (and with it a lost lock) fails the run instead of
// letting it overlap another. It returns ErrAlreadyRunning when another run,
// in this process or another, holds the lock.
func (s *Service) acquire(ctx context.Context) (*pgx.Conn, error) {
	if s.cfgErr != nil {
		return nil, s.cfgErr
	}
	s.mu.Lock()
	if s.active {
		s.mu.Unlock()
		return nil, ErrAlreadyRunning
	}
	s.active = true
	s.mu.Unlock()
	conn, err := s.tryLock(ctx)
	if err != nil {
		s.mu.Lock()
		s.active = false
		s.mu.Unlock()
		return nil, err
	}
	return conn, nil
}

// connect opens a connection of the run's own, set up for its statements.
func (s *Service) connect(ctx context.Context) (*pgx.Conn, error) {
	cc := s.pool.Config().ConnConfig
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	cc.RuntimeParams["application_name"] = "edgesync-reconcile"
	// Chunk statements are many and short: compiling each with JIT costs
	// more than it saves (tens of ms per statement on a million rows). Hash
	// and merge joins are off as a safety net: the statements are built from
	// per-row key probes (see table.go), and a misestimated chunk must never
	// turn into a join that reads a whole table.
	cc.RuntimeParams["jit"] = "off"
	cc.RuntimeParams["enable_hashjoin"] = "off"
	cc.RuntimeParams["enable_mergejoin"] = "off"
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connect for reconcile: %w", err)
	}
	return conn, nil
}

func (s *Service) tryLock(ctx context.Context) (*pgx.Conn, error) {
	conn, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, lockKey).Scan(&ok); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("take the reconcile lock: %w", err)
	}
	if !ok {
		conn.Close(context.WithoutCancel(ctx))
		return nil, ErrAlreadyRunning
	}
	return conn, nil
}

// release unlocks explicitly (the server ends a closed session
// asynchronously, so the next run could otherwise still find the lock taken)
// and ends the session, which frees the lock even if the unlock failed.
func (s *Service) release(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, lockKey)
	_ = conn.Close(ctx)
	s.mu.Lock()
	s.active = false
	s.mu.Unlock()
}

// begin takes the lock and records the run as running.
func (s *Service) begin(ctx context.Context, trigger string, dryRun bool) (*lease, error) {
	conn, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	// Holding the lock proves no other run is alive: rows still "running"
	// belong to processes that died mid-run.
	if _, err := conn.Exec(ctx, `UPDATE reconcile_runs SET state = 'error', finished_at = now(),
		error = 'abandoned: the process running it stopped before it finished'
		WHERE state = 'running'`); err != nil {
		s.release(conn)
		return nil, fmt.Errorf("close abandoned runs: %w", err)
	}
	l := &lease{conn: conn, run: Run{Trigger: trigger, DryRun: dryRun, State: "running"}}
	err = conn.QueryRow(ctx, `INSERT INTO reconcile_runs (trigger, dry_run) VALUES ($1, $2) RETURNING id::text, started_at`,
		trigger, dryRun).Scan(&l.run.ID, &l.run.StartedAt)
	if err != nil {
		s.release(conn)
		return nil, fmt.Errorf("record the run: %w", err)
	}
	return l, nil
}

// RunNow runs one reconciliation synchronously and returns the recorded run.
// progress (may be nil) is called after each chunk with memory rows done and
// the estimated total. When the run fails, the returned Run carries the
// error too (state "error").
func (s *Service) RunNow(ctx context.Context, trigger string, dryRun bool, progress func(done, total int64)) (Run, error) {
	l, err := s.begin(ctx, trigger, dryRun)
	if err != nil {
		return Run{}, err
	}
	return s.execute(ctx, l, progress)
}

// Start begins a run in the background and returns its id at once. The lock
// is taken before it returns, so a caller can answer "already running"
// (ErrAlreadyRunning) synchronously. The run continues after ctx ends; Wait
// stops it at shutdown.
func (s *Service) Start(ctx context.Context, trigger string, dryRun bool) (string, error) {
	if s.bg.Err() != nil {
		return "", ErrShuttingDown
	}
	l, err := s.begin(ctx, trigger, dryRun)
	if err != nil {
		return "", err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		run, err := s.execute(s.bg, l, nil)
		if err != nil {
			s.log.Error("reconcile run failed", zap.String("run_id", run.ID), zap.String("trigger", trigger), zap.Error(err))
		}
	}()
	return l.run.ID, nil
}

// Wait blocks until a background run has finished. When ctx ends first it
// cancels the run, waits for it to record its end, and returns ctx's error.
// After Wait, Start refuses new runs.
func (s *Service) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.stopBG()
		return nil
	case <-ctx.Done():
		s.stopBG()
		<-done
		return ctx.Err()
	}
}

// execute does the work of a begun run, records its end, updates the metrics,
// publishes the completion event and releases the lock.
func (s *Service) execute(ctx context.Context, l *lease, progress func(done, total int64)) (Run, error) {
	released := false
	defer func() {
		if !released {
			s.release(l.conn)
		}
	}()
	start := time.Now()
	s.log.Info("reconcile run started", zap.String("run_id", l.run.ID), zap.String("trigger", l.run.Trigger), zap.Bool("dry_run", l.run.DryRun))
	if s.beforeWork != nil {
		s.beforeWork(l.run)
	}
	rep, err := s.work(ctx, l, progress)
	rep.DurationMS = time.Since(start).Milliseconds()
	rep.DryRun = l.run.DryRun
	s.m.observe(rep, err, time.Since(start))

	run := l.run
	run.Report = rep
	run.State = "done"
	if err != nil {
		run.State = "error"
		run.Error = err.Error()
		if ctx.Err() != nil {
			run.Error = "cancelled: " + run.Error
		}
	}
	// Unlock before recording the end, so whoever sees the run done can
	// start the next one at once. (A run starting in between may mark this
	// row abandoned for a moment; the update below sets the real end.)
	s.release(l.conn)
	released = true
	// The run's own context may be the one that was cancelled; its end must
	// still be recorded.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	body, jerr := json.Marshal(rep)
	if jerr != nil {
		return run, errors.Join(err, fmt.Errorf("encode report: %w", jerr))
	}
	var errText *string
	if run.Error != "" {
		errText = &run.Error
	}
	var finished time.Time
	if uerr := s.pool.QueryRow(rctx, `UPDATE reconcile_runs SET state = $2, finished_at = now(), report = $3, error = $4
		WHERE id = $1 RETURNING finished_at`, run.ID, run.State, body, errText).Scan(&finished); uerr != nil {
		err = errors.Join(err, fmt.Errorf("record the end of run %s: %w", run.ID, uerr))
	} else {
		run.FinishedAt = &finished
	}
	fields := []zap.Field{zap.String("run_id", run.ID), zap.Any("report", rep)}
	if err == nil {
		s.log.Info("reconcile run done", fields...)
	}
	s.publish(rctx, run)
	return run, err
}

func (s *Service) publish(ctx context.Context, run Run) {
	if s.cfg.Publish == nil {
		return
	}
	data, err := json.Marshal(run)
	if err != nil {
		s.log.Warn("encode reconcile.completed", zap.String("run_id", run.ID), zap.Error(err))
		return
	}
	// Retried, with the run's id as msg id: one failed publish (a NATS
	// failover) must not lose the report consumers wait for.
	subject, msgID := domain.Subjects{Prefix: s.cfg.SubjectPrefix}.ReconcileCompleted(), "reconcile/"+run.ID+"/completed"
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = 200*time.Millisecond, 5*time.Second
	b.MaxElapsedTime = s.cfg.PublishFor
	if b.MaxElapsedTime <= 0 {
		b.MaxElapsedTime = time.Minute
	}
	err = backoff.Retry(func() error { return s.cfg.Publish(ctx, subject, msgID, data) }, backoff.WithContext(b, ctx))
	if err != nil {
		s.log.Warn("publish reconcile.completed: given up; the run's report stays in the database (GET /admin/reconcile/{run_id})",
			zap.String("run_id", run.ID), zap.Error(err))
	}
}

// Get returns a recorded run.
func (s *Service) Get(ctx context.Context, id string) (Run, error) {
	var u pgtype.UUID
	if err := u.Scan(strings.TrimSpace(id)); err != nil {
		return Run{}, ErrBadRunID
	}
	rows, err := s.pool.Query(ctx, `SELECT `+runColumns+` FROM reconcile_runs WHERE id = $1`, u)
	if err != nil {
		return Run{}, fmt.Errorf("read run %s: %w", id, err)
	}
	run, err := pgx.CollectExactlyOneRow(rows, scanRun)
	if errors.Is(err, pgx.ErrNoRows) {
		return Run{}, ErrRunNotFound
	}
	if err != nil {
		return Run{}, fmt.Errorf("read run %s: %w", id, err)
	}
	return run, nil
}

// MaxListedRuns bounds List.
const MaxListedRuns = 200

// List returns the latest recorded runs, newest first, at most limit of them
// (1 to MaxListedRuns): the history the storage console shows. The index on
// started_at makes it a short index scan however many runs are recorded.
func (s *Service) List(ctx context.Context, limit int) ([]Run, error) {
	limit = min(max(limit, 1), MaxListedRuns)
	rows, err := s.pool.Query(ctx, `SELECT `+runColumns+` FROM reconcile_runs ORDER BY started_at DESC, id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	runs, err := pgx.CollectRows(rows, scanRun)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	return runs, nil
}

const runColumns = `id::text, trigger, dry_run, state, started_at, finished_at, report, error`

func scanRun(row pgx.CollectableRow) (Run, error) {
	var (
		run    Run
		report []byte
		errMsg *string
	)
	if err := row.Scan(&run.ID, &run.Trigger, &run.DryRun, &run.State, &run.StartedAt, &run.FinishedAt, &report, &errMsg); err != nil {
		return Run{}, err
	}
	if errMsg != nil {
		run.Error = *errMsg
	}
	if report != nil {
		run.Report = &Report{}
		if err := json.Unmarshal(report, run.Report); err != nil {
			return Run{}, fmt.Errorf("decode report of run %s: %w", run.ID, err)
		}
	}
	return run, nil
}
