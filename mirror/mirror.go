package mirror

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"go.uber.org/zap"

	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/icp"
)

// JobKind is the River job kind of a memory's mirror job.
const JobKind = "icp_mirror"

// Queue is the River queue the mirror's jobs run in, so they never compete with other River
// users of the same database for workers.
const Queue = "icp_mirror"

// Defaults for zero Config fields.
const (
	DefaultWorkers       = 4
	DefaultMaxAttempts   = 5
	DefaultAssetMaxBytes = domain.MaxAssetBytes
	DefaultFetchTimeout  = 30 * time.Second
	DefaultRetryBase     = 10 * time.Second
	DefaultRetryMax      = 10 * time.Minute
	DefaultJobTimeout    = time.Hour
	DefaultPollInterval  = time.Second
	DefaultStopTimeout   = 5 * time.Second
	DefaultHeartbeat     = time.Minute
	// DefaultRoundBase is the first wait before reconcile retries a failed memory
	// (EDGESYNC_ICP_RETRY_BASE); each further round doubles it, up to RoundMax.
	DefaultRoundBase = 10 * time.Minute
	// RoundMax caps the wait between rounds.
	RoundMax = 24 * time.Hour
	// DefaultMaxRounds is how many rounds (one job of MaxAttempts attempts each) a memory gets
	// before the mirror stops scheduling retries: with the 10-minute base the rounds end about
	// 2.8 days after the first failure.
	DefaultMaxRounds = 10
	// DefaultWakeQueue is how many wakes wait for the job queue before further wakes are dropped
	// in favour of one re-read of the migrating edges.
	DefaultWakeQueue = 4096

	progressInterval        = 250 * time.Millisecond
	fetchCooldown           = 5 * time.Millisecond
	queueMigrationLockID    = 0x6564676572697672 // "edgerivr": serialises River migrations across daemons
	scanBatch               = 500
	failureRecordingTimeout = 10 * time.Second
	rescanInterval          = 5 * time.Second
	connectBackoffMax       = 30 * time.Second
)

// Config configures a Mirror. Zero values take the defaults above.
type Config struct {
	Tables []domain.Table
	// ICP is the canister client's configuration; Run connects it, retrying while the replica is
	// unreachable, unless Deps.Client is given.
	ICP icp.Config
	// Subjects names the progress subject (<prefix>.sync.progress).
	Subjects domain.Subjects
	// MaxAttempts bounds the attempts of one job (a round) before its edges become failed.
	MaxAttempts int
	// AssetMaxBytes refuses larger assets (before the download when the size is known); at most
	// domain.MaxAssetBytes, what the canister stores (the default).
	AssetMaxBytes int64
	// AssetHosts is the allow-list of hosts assets may be fetched from (EDGESYNC_ASSET_HOSTS);
	// empty means domain.DefaultAssetHosts.
	AssetHosts []domain.HostPattern
	// SpoolDir holds downloads too large to keep in memory while they upload (see PrepareSpool);
	// os.TempDir() when empty.
	SpoolDir string
	// FetchTimeout bounds the wait for the blob store's answer and every pause between bytes;
	// not the whole download, which may rightly take long for a large file.
	FetchTimeout time.Duration
	// Workers is how many memories are mirrored at once.
	Workers int
	// RetryBase is the first retry delay within a round; each further attempt doubles it up to
	// RetryMax.
	RetryBase time.Duration
	// RetryMax caps the retry delay. Keep it below reconcile's stuck-after, or reconcile counts a
	// job that is merely waiting as stuck.
	RetryMax time.Duration
	// RoundBase is the wait after a failed round before reconcile starts the next one; it doubles
	// per round up to RoundMax. MaxRounds rounds in all; then the edges stay failed.
	RoundBase time.Duration
	MaxRounds int
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
	// WakeQueue is the capacity of the wake queue.
	WakeQueue int
}

// Publish sends one message on a subject; the mirror publishes upload progress with it.
type Publish func(subject string, data []byte) error

// Deps are what a Mirror uses but does not own.
type Deps struct {
	Pool    *pgxpool.Pool
	Log     *zap.Logger
	Metrics *Metrics // NewMetrics; required
	// Publish, if not nil, receives the progress of every upload (at most every 250 ms per upload,
	// and once at the end) on Config.Subjects.SyncProgress().
	Publish Publish
	// Client, if not nil, is used instead of connecting Config.ICP.
	Client *icp.Client
}

// Mirror stores memories on the canister through durable River jobs: one job per memory, retried
// with exponential backoff, driven by the memory's migrating icp-canister edges. It lives as long
// as the process; Run runs it (on the leader) and may be called again after it returned.
type Mirror struct {
	cfg     Config
	pool    *pgxpool.Pool
	log     *zap.Logger
	tables  map[string]domain.Table
	fetcher *fetcher
	metrics *Metrics
	publish Publish
	checker *Checker

	client  atomic.Pointer[icp.Client]
	wakes   chan wake
	dropped atomic.Bool // a wake did not fit the queue: re-read the migrating edges
	running atomic.Bool
	// stopping is set when the running Run's context ended, so that an attempt cancelled by the
	// shutdown is not counted as a failure.
	stopping atomic.Bool
}

type wake struct{ id, typ string }

// New builds a Mirror; it touches neither the database nor the canister: Run does.
func New(cfg Config, deps Deps) (*Mirror, error) {
	if deps.Pool == nil || deps.Metrics == nil {
		return nil, errors.New("icp mirror: a database pool and metrics are required")
	}
	if deps.Log == nil {
		deps.Log = zap.NewNop()
	}
	cfg = cfg.withDefaults()
	if cfg.AssetMaxBytes > domain.MaxAssetBytes {
		return nil, fmt.Errorf("icp mirror: asset limit %d is more than the canister stores (%d bytes)", cfg.AssetMaxBytes, domain.MaxAssetBytes)
	}
	tables, err := mapTables(cfg.Tables)
	if err != nil {
		return nil, err
	}
	hosts := cfg.AssetHosts
	if len(hosts) == 0 {
		if hosts, err = domain.ParseHostPatterns(domain.DefaultAssetHosts); err != nil {
			return nil, err
		}
	}
	policy := &hostPolicy{patterns: hosts}
	m := &Mirror{
		cfg:     cfg,
		pool:    deps.Pool,
		log:     deps.Log.With(zap.String("component", "icp-mirror")),
		tables:  tables,
		metrics: deps.Metrics,
		publish: deps.Publish,
		checker: &Checker{},
		wakes:   make(chan wake, cfg.WakeQueue),
		fetcher: &fetcher{
			client:  policy.httpClient(),
			policy:  policy,
			timeout: cfg.FetchTimeout,
			max:     cfg.AssetMaxBytes,
			dir:     cfg.SpoolDir,
		},
	}
	if deps.Client != nil {
		m.setClient(deps.Client)
	}
	return m, nil
}

func (c Config) withDefaults() Config {
	set := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MaxAttempts, DefaultMaxAttempts)
	def(&c.Workers, DefaultWorkers)
	def(&c.MaxRounds, DefaultMaxRounds)
	def(&c.WakeQueue, DefaultWakeQueue)
	if c.AssetMaxBytes <= 0 {
		c.AssetMaxBytes = DefaultAssetMaxBytes
	}
	set(&c.FetchTimeout, DefaultFetchTimeout)
	set(&c.RetryBase, DefaultRetryBase)
	set(&c.RetryMax, DefaultRetryMax)
	set(&c.RoundBase, DefaultRoundBase)
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

// newRiver builds the job queue of one Run.
func (m *Mirror) newRiver() (*river.Client[pgx.Tx], error) {
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &worker{m: m}); err != nil {
		return nil, fmt.Errorf("icp mirror worker: %w", err)
	}
	rc, err := river.NewClient(riverpgxv5.New(m.pool), &river.Config{
		Queues:               map[string]river.QueueConfig{Queue: {MaxWorkers: m.cfg.Workers}},
		Workers:              workers,
		MaxAttempts:          m.cfg.MaxAttempts,
		JobTimeout:           m.cfg.JobTimeout,
		RescueStuckJobsAfter: m.cfg.JobTimeout + time.Minute,
		FetchPollInterval:    m.cfg.PollInterval,
		// River fetches at most as many jobs as workers are free, once per cooldown: with its 100 ms
		// default, four workers could start at most 40 small memories a second.
		FetchCooldown:   min(m.cfg.PollInterval, fetchCooldown),
		SoftStopTimeout: m.cfg.StopTimeout / 2,
		Logger:          slogFor(m.log.With(zap.String("component", "river"))),
	})
	if err != nil {
		return nil, fmt.Errorf("icp mirror job queue: %w", err)
	}
	return rc, nil
}

// Run migrates River's tables, feeds the wake queue to the job queue, connects the canister client
// (retrying with backoff while the replica is unreachable), starts the workers, queues every memory
// whose icp-canister edges are migrating (jobs lost with a crash, or wakes missed while stopped),
// and blocks until ctx ends. Then it stops within StopTimeout: running jobs get half of it to
// finish and are then cancelled, to be resumed by the next start. It returns nil when ctx ended,
// and the error otherwise. Run may be called again after it returned, never twice at once.
func (m *Mirror) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("icp mirror: Run is already running")
	}
	defer m.running.Store(false)
	m.stopping.Store(false)
	if err := MigrateQueue(ctx, m.pool, m.log); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	rc, err := m.newRiver()
	if err != nil {
		return err
	}
	// The feeder inserts wakes as jobs while the client connects: inserting needs no worker.
	fctx, stopFeed := context.WithCancel(ctx)
	fed := make(chan struct{})
	go func() { defer close(fed); m.feed(fctx, rc) }()
	defer func() { stopFeed(); <-fed }()

	if m.client.Load() == nil {
		c, err := m.connect(ctx)
		if err != nil {
			return nil // ctx ended while the replica was unreachable
		}
		m.setClient(c)
	}
	// River's own context must outlive ctx so that Stop below can shut it down in order.
	if err := rc.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("icp mirror: start job queue: %w", err)
	}
	var runErr error
	select {
	case <-ctx.Done():
	case <-rc.Stopped():
		runErr = errors.New("icp mirror: job queue stopped unexpectedly")
	}
	m.stopping.Store(true)
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.StopTimeout)
	defer cancel()
	if err := rc.Stop(stopCtx); err != nil && runErr == nil {
		runErr = fmt.Errorf("icp mirror: stop job queue: %w", err)
	}
	return runErr
}

// Checker returns the canister status view reconcile compares edges with; it answers once Run
// has connected the client.
func (m *Mirror) Checker() *Checker { return m.checker }

func (m *Mirror) setClient(c *icp.Client) {
	m.client.Store(c)
	m.checker.set(c)
}
