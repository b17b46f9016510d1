package icp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/edgesync/edgesync/domain"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"
	"go.uber.org/zap"
)

// JobKind is the River job kind of a memory's mirror job.
const JobKind = "icp_mirror"

// Queue is the River queue the mirror's jobs run in, so they never compete with other River
// users of the same database for workers.
const Queue = "icp_mirror"

// Mirror defaults.
const (
	DefaultMirrorWorkers    = 4
	DefaultMaxAttempts      = 5
	DefaultAssetMaxBytes    = 1 << 30
	DefaultFetchTimeout     = 30 * time.Second
	DefaultRetryBase        = 10 * time.Second
	DefaultRetryMax         = 10 * time.Minute
	DefaultJobTimeout       = time.Hour
	DefaultPollInterval     = time.Second
	DefaultStopTimeout      = 5 * time.Second
	DefaultHeartbeat        = time.Minute
	progressInterval        = 250 * time.Millisecond
	fetchCooldown           = 5 * time.Millisecond
	queueMigrationLockID    = 0x6564676572697672 // "edgerivr": serialises River migrations across daemons
	startupScanBatch        = 500
	failureRecordingTimeout = 10 * time.Second
)

// MirrorConfig configures a Mirror. Zero values take the defaults above.
type MirrorConfig struct {
	Tables []domain.Table
	// MaxAttempts bounds the attempts of one job before its edges become failed.
	MaxAttempts int
	// AssetMaxBytes refuses larger assets (before the download when the size is known).
	AssetMaxBytes int64
	// FetchTimeout bounds the wait for the blob store's answer and every pause between bytes;
	// not the whole download, which may rightly take long for a large file.
	FetchTimeout time.Duration
	// HTTPClient downloads assets; a client with the default transport when nil.
	HTTPClient *http.Client
	// Workers is how many memories are mirrored at once.
	Workers int
	// Progress, if not nil, is told the bytes of an asset the canister holds, at most every
	// 250 ms per upload and once at the end.
	Progress func(memoryID, memoryType string, done, total int64)
	// RetryBase is the first retry delay; each further attempt doubles it up to RetryMax.
	RetryBase time.Duration
	// RetryMax caps the retry delay. Keep it below reconcile's stuck-after, or reconcile counts a
	// job that is merely waiting as stuck.
	RetryMax time.Duration
	// JobTimeout bounds one attempt. A job left running by a crashed process is retried
	// JobTimeout + 1 minute after it started.
	JobTimeout time.Duration
	// PollInterval is how often River looks for jobs whose retry time has come; new jobs are
	// announced by LISTEN/NOTIFY and start at once.
	PollInterval time.Duration
	// StopTimeout bounds Run's shutdown: half of it lets running jobs finish, then they are
	// cancelled (an interrupted upload resumes on the next start from the chunks the canister holds).
	StopTimeout time.Duration
	// Heartbeat is how often a long upload touches its edges' updated_at, so reconcile does not
	// take it for stuck.
	Heartbeat time.Duration
	// TempDir holds downloaded assets while they upload; os.TempDir() when empty.
	TempDir string
}

// Mirror stores memories on the canister through durable River jobs: one job per memory, retried
// with exponential backoff, driven by the memory's migrating icp-canister edges.
type Mirror struct {
	cfg      MirrorConfig
	pool     *pgxpool.Pool
	client   *Client
	log      *zap.Logger
	tables   map[string]domain.Table
	fetcher  *fetcher
	river    *river.Client[pgx.Tx]
	metrics  *mirrorMetrics
	stopping atomic.Bool
	started  atomic.Bool
}

// NewMirror builds a Mirror; it does not touch the database: Run does.
func NewMirror(cfg MirrorConfig, pool *pgxpool.Pool, client *Client, logger *zap.Logger, reg prometheus.Registerer) (*Mirror, error) {
	if pool == nil || client == nil {
		return nil, errors.New("icp mirror: a database pool and an ICP client are required")
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	cfg = cfg.withDefaults()
	tables, err := mapTables(cfg.Tables)
	if err != nil {
		return nil, err
	}
	metrics, err := newMirrorMetrics(reg)
	if err != nil {
		return nil, err
	}
	m := &Mirror{
		cfg:     cfg,
		pool:    pool,
		client:  client,
		log:     logger.With(zap.String("component", "icp-mirror")),
		tables:  tables,
		fetcher: &fetcher{client: cfg.HTTPClient, timeout: cfg.FetchTimeout, max: cfg.AssetMaxBytes, dir: cfg.TempDir},
		metrics: metrics,
	}
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &mirrorWorker{m: m}); err != nil {
		return nil, fmt.Errorf("icp mirror worker: %w", err)
	}
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:               map[string]river.QueueConfig{Queue: {MaxWorkers: cfg.Workers}},
		Workers:              workers,
		MaxAttempts:          cfg.MaxAttempts,
		JobTimeout:           cfg.JobTimeout,
		RescueStuckJobsAfter: cfg.JobTimeout + time.Minute,
		FetchPollInterval:    cfg.PollInterval,
		// River fetches at most as many jobs as workers are free, once per cooldown: with its 100 ms
		// default, four workers could start at most 40 small memories a second.
		FetchCooldown:   min(cfg.PollInterval, fetchCooldown),
		SoftStopTimeout: cfg.StopTimeout / 2,
		Logger:          slogFor(m.log.With(zap.String("component", "river"))),
	})
	if err != nil {
		return nil, fmt.Errorf("icp mirror job queue: %w", err)
	}
	m.river = rc
	return m, nil
}

func (c MirrorConfig) withDefaults() MirrorConfig {
	set := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.AssetMaxBytes <= 0 {
		c.AssetMaxBytes = DefaultAssetMaxBytes
	}
	if c.Workers <= 0 {
		c.Workers = DefaultMirrorWorkers
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
	set(&c.FetchTimeout, DefaultFetchTimeout)
	set(&c.RetryBase, DefaultRetryBase)
	set(&c.RetryMax, DefaultRetryMax)
	set(&c.JobTimeout, DefaultJobTimeout)
	set(&c.PollInterval, DefaultPollInterval)
	set(&c.StopTimeout, DefaultStopTimeout)
	set(&c.Heartbeat, DefaultHeartbeat)
	c.RetryMax = max(c.RetryMax, c.RetryBase)
	return c
}

func mapTables(ts []domain.Table) (map[string]domain.Table, error) {
	if len(ts) == 0 {
		return nil, errors.New("icp mirror: no memory tables configured")
	}
	out := make(map[string]domain.Table, len(ts))
	for _, t := range ts {
		if err := t.Validate(); err != nil {
			return nil, fmt.Errorf("icp mirror: table mapping: %w", err)
		}
		if _, dup := out[t.MemoryType]; dup {
			return nil, fmt.Errorf("icp mirror: memory type %s is mapped twice", t.MemoryType)
		}
		out[t.MemoryType] = t
	}
	return out, nil
}

// MigrateQueue creates or upgrades River's tables (river_job, river_leader, …) with rivermigrate,
// under an advisory lock so daemons starting together do not race. It is idempotent: Run calls it
// first, and `edgesync migrate` may call it too. The pool needs at least two connections.
func MigrateQueue(ctx context.Context, pool *pgxpool.Pool, logger *zap.Logger) error {
	if logger == nil {
		logger = zap.NewNop()
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("river migrations: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(queueMigrationLockID)); err != nil {
		return fmt.Errorf("river migrations: lock: %w", err)
	}
	defer func() {
		// Unlock even when ctx ended, or the pooled session keeps the lock.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, int64(queueMigrationLockID)); err != nil {
			conn.Conn().Close(ctx) //nolint:errcheck // a closed session releases its locks
		}
	}()
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{
		Logger: slogFor(logger.With(zap.String("component", "river-migrate"))),
	})
	if err != nil {
		return fmt.Errorf("river migrations: %w", err)
	}
	res, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return fmt.Errorf("river migrations: %w", err)
	}
	for _, v := range res.Versions {
		logger.Info("river migration applied", zap.Int("version", v.Version), zap.String("name", v.Name))
	}
	return nil
}

// Migrate is MigrateQueue on the mirror's pool.
func (m *Mirror) Migrate(ctx context.Context) error { return MigrateQueue(ctx, m.pool, m.log) }

// Run migrates River's tables, starts the workers, queues every memory whose icp-canister edges
// are migrating (jobs lost with a crash, or wakes missed while stopped), and blocks until ctx
// ends. Then it stops within StopTimeout: running jobs get half of it to finish and are then
// cancelled, to be resumed by the next start. Run may be called once.
func (m *Mirror) Run(ctx context.Context) error {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("icp mirror: Run called twice")
	}
	if err := m.Migrate(ctx); err != nil {
		return err
	}
	// River's own context must outlive ctx so that Stop below can shut it down in order.
	if err := m.river.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("icp mirror: start job queue: %w", err)
	}
	scanErr := m.enqueueMigrating(ctx)
	if scanErr != nil && ctx.Err() == nil {
		// Not fatal: the edges stay migrating, and reconcile's stuck check wakes them again.
		m.log.Error("queue migrating memories at startup", zap.Error(scanErr))
	}
	select {
	case <-ctx.Done():
	case <-m.river.Stopped():
		return errors.New("icp mirror: job queue stopped unexpectedly")
	}
	m.stopping.Store(true)
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.StopTimeout)
	defer cancel()
	if err := m.river.Stop(stopCtx); err != nil {
		return fmt.Errorf("icp mirror: stop job queue: %w", err)
	}
	return nil
}

// enqueueMigrating queues a job for every memory with a migrating icp-canister edge.
func (m *Mirror) enqueueMigrating(ctx context.Context) error {
	rows, err := m.pool.Query(ctx, `SELECT DISTINCT memory_id::text, memory_type::text FROM storage_edges
		WHERE backend = 'icp-canister' AND sync_state = 'migrating'`)
	if err != nil {
		return fmt.Errorf("scan migrating icp edges: %w", err)
	}
	var batch []river.InsertManyParams
	var queued int
	var id, typ string
	_, err = pgx.ForEachRow(rows, []any{&id, &typ}, func() error {
		if _, ok := m.tables[typ]; !ok {
			m.log.Warn("migrating icp edge of a memory type without a table mapping; left alone",
				zap.String("memory_id", id), zap.String("memory_type", typ))
			return nil
		}
		batch = append(batch, river.InsertManyParams{Args: mirrorArgs{MemoryID: id, MemoryType: typ}, InsertOpts: m.insertOpts()})
		return nil
	})
	if err != nil {
		return fmt.Errorf("scan migrating icp edges: %w", err)
	}
	for len(batch) > 0 {
		n := min(len(batch), startupScanBatch)
		res, err := m.river.InsertMany(ctx, batch[:n])
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

// Wake asks for memoryID to be mirrored. It is one insert, and idempotent: while a job of the
// memory is waiting, running or retrying, further wakes are dropped by River's unique index.
func (m *Mirror) Wake(ctx context.Context, memoryID, memoryType string) error {
	if !ValidUUID(memoryID) {
		return fmt.Errorf("wake icp mirror: %w: %q", ErrInvalidUUID, memoryID)
	}
	if _, ok := m.tables[memoryType]; !ok {
		return fmt.Errorf("wake icp mirror: memory type %q has no table mapping", memoryType)
	}
	if _, err := m.river.Insert(ctx, mirrorArgs{MemoryID: memoryID, MemoryType: memoryType}, m.insertOpts()); err != nil {
		return fmt.Errorf("wake icp mirror %s %s: %w", memoryType, memoryID, err)
	}
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

// Requeue sets the memory's icp-canister edges back to migrating and wakes its job: reconcile's
// repair for ICP drift and for failed syncs due for another try.
func (m *Mirror) Requeue(ctx context.Context, memoryID, memoryType string) error {
	if !ValidUUID(memoryID) {
		return fmt.Errorf("requeue icp mirror: %w: %q", ErrInvalidUUID, memoryID)
	}
	if _, ok := m.tables[memoryType]; !ok {
		return fmt.Errorf("requeue icp mirror: memory type %q has no table mapping", memoryType)
	}
	if _, err := m.pool.Exec(ctx, `UPDATE storage_edges SET sync_state = 'migrating'
		WHERE memory_id = $1 AND memory_type = $2 AND backend = 'icp-canister' AND sync_state <> 'migrating'`,
		memoryID, memoryType); err != nil {
		return fmt.Errorf("requeue icp mirror %s %s: %w", memoryType, memoryID, err)
	}
	return m.Wake(ctx, memoryID, memoryType)
}

// Checker returns the canister status view reconcile compares edges with.
func (m *Mirror) Checker() *ICPStatus { return &ICPStatus{client: m.client} }

// ICPStatus answers what the canister holds for a memory.
type ICPStatus struct {
	client *Client
}

// NewICPStatus builds the status view on a client, for reconcile runs without a Mirror (the CLI).
func NewICPStatus(c *Client) *ICPStatus { return &ICPStatus{client: c} }

// Status returns the stored metadata hash and asset hash and size of memoryID; an empty hash
// means the canister does not hold that artifact.
func (s *ICPStatus) Status(ctx context.Context, memoryID string) (metaHash, assetHash string, assetSize int64, err error) {
	st, err := s.client.Status(ctx, memoryID)
	if err != nil {
		return "", "", 0, err
	}
	if st.Metadata != nil {
		metaHash = st.Metadata.ContentHash
	}
	if st.Asset != nil {
		assetHash, assetSize = st.Asset.ContentHash, int64(st.Asset.Size)
	}
	return metaHash, assetHash, assetSize, nil
}

// mirrorMetrics are the mirror's Prometheus collectors (CONTRACT section 9).
type mirrorMetrics struct {
	uploadBytes    prometheus.Counter
	uploadFailures prometheus.Counter
	jobs           *prometheus.CounterVec
	uploading      prometheus.Gauge
}

func newMirrorMetrics(reg prometheus.Registerer) (*mirrorMetrics, error) {
	m := &mirrorMetrics{
		uploadBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgesync_icp_upload_bytes_total",
			Help: "Asset bytes sent to the ICP canister (chunks the canister already held are not counted).",
		}),
		uploadFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgesync_icp_upload_failures_total",
			Help: "Failed ICP mirror attempts (each retry counts).",
		}),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgesync_icp_jobs_total",
			Help: "ICP mirror job attempts by result: ok, retry (failed, will retry) or failed (given up).",
		}, []string{"result"}),
		uploading: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgesync_icp_uploads_in_progress",
			Help: "Asset uploads to the ICP canister running now.",
		}),
	}
	for _, r := range []string{resultOK, resultRetry, resultFailed} {
		m.jobs.WithLabelValues(r) // export zeros, so alerts on rate() work from the start
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.uploadBytes, err = register(reg, m.uploadBytes)
	if err == nil {
		m.uploadFailures, err = register(reg, m.uploadFailures)
	}
	if err == nil {
		m.jobs, err = register(reg, m.jobs)
	}
	if err == nil {
		m.uploading, err = register(reg, m.uploading)
	}
	if err != nil {
		return nil, fmt.Errorf("icp mirror metrics: %w", err)
	}
	return m, nil
}

// register registers c, or returns the collector already registered under its name, so two
// mirrors in one process (tests, a restart in place) share their series.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

const (
	resultOK     = "ok"
	resultRetry  = "retry"
	resultFailed = "failed"
)
