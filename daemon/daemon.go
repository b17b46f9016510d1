package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5/pgxpool"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/internal/api"
	"github.com/edgesync/edgesync/internal/gallerystatus"
	"github.com/edgesync/edgesync/internal/natsserver"
	"github.com/edgesync/edgesync/internal/presencecache"
	"github.com/edgesync/edgesync/internal/ssefeed"
	"github.com/edgesync/edgesync/mirror"
	"github.com/edgesync/edgesync/pipeline"
	"github.com/edgesync/edgesync/reconcile"
	natssink "github.com/edgesync/edgesync/sinks/nats"
)

// NewLogger builds the zap logger of the configuration.
func NewLogger(cfg config.Config, w zapcore.WriteSyncer) (*zap.Logger, error) {
	var level zapcore.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, err
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey, encCfg.EncodeTime = "ts", zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if cfg.LogFormat == "console" {
		encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, w, level)
	// Repeated messages are sampled so an error loop cannot flood the log.
	core = zapcore.NewSamplerWithOptions(core, time.Second, 20, 100)
	return zap.New(core, zap.AddCaller()), nil
}

// defaultMemoryLimit is the Go soft memory limit when GOMEMLIMIT is unset.
const defaultMemoryLimit = 40 << 20

// memoryBudget is what the pipeline's queues and publish window may hold: a
// quarter of the Go memory limit (GOMEMLIMIT, which the Deployment sets below
// the container's limit), within [4 MiB, 256 MiB]. The rest is the heap's
// working set, the HTTP server and the ICP uploads.
func memoryBudget() int64 {
	return min(max(debug.SetMemoryLimit(-1)/4, 4<<20), 256<<20)
}

// Daemon is `edgesync run`: it owns every long-running part.
type Daemon struct {
	cfg      config.Config
	log      *zap.Logger
	pool     *pgxpool.Pool
	pipePool *pgxpool.Pool // the pipeline's own connections
	nc       *natsgo.Conn
	embedded *natsserver.Server
	reg      *prometheus.Registry
	metrics  *pipeline.Metrics
	leaderG  prometheus.Gauge
	api      *api.Server
	http     *http.Server
	listener net.Listener
	leader   atomic.Bool
	ready    atomic.Bool
	js       jetstream.JetStream
	recon    *reconcile.Service
	overview *overview
	icp      *mirror.Mirror // nil when the ICP mirror is off
	feed     *ssefeed.Feed
	presence *presencecache.Cache // nil when EDGESYNC_PRESENCE_MAX_BYTES is 0

	// created once, shared by the gallery tracker of every leadership term
	galleryMetrics *gallerystatus.Metrics
}

// New connects to Postgres and NATS (starting the embedded server when no URL
// is configured) and binds the HTTP listener, so Run only runs.
func New(ctx context.Context, cfg config.Config, log *zap.Logger) (*Daemon, error) {
	if os.Getenv("GOMEMLIMIT") == "" {
		// A soft limit keeps the heap (and so RSS) near the 64 MiB goal under
		// catch-up load; GOMEMLIMIT (the Deployment sets it) overrides it.
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	if err := cfg.CheckEmbeddedNATS(); err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: log, reg: NewRegistry()}
	ok := false
	defer func() {
		if !ok {
			d.close()
		}
	}()
	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	pcfg.ConnConfig.RuntimeParams["application_name"] = "edgesync"
	// The ICP mirror's workers, reconcile, the gallery tracker and the API
	// share this pool; the pipeline has its own (below), so anonymous API
	// load can never take the connections the edge writer needs.
	if pcfg.MaxConns < 16 {
		pcfg.MaxConns = 16
	}
	d.pool, err = pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	ppcfg, _ := pgxpool.ParseConfig(cfg.DatabaseURL) // parsed above
	ppcfg.ConnConfig.RuntimeParams["application_name"] = "edgesync-pipeline"
	ppcfg.MaxConns = 4 // the edge writer, the snapshot, the heartbeat and progress
	d.pipePool, err = pgxpool.NewWithConfig(ctx, ppcfg)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err = d.pool.Ping(pctx)
	if err == nil {
		// What a person must fix on the server fails the start with one
		// line, instead of a pipeline retrying forever.
		err = cdc.CheckServer(pctx, d.pool, cfg.Slot)
	}
	cancel()
	if err != nil {
		return nil, err
	}
	natsURL := cfg.NATSURL
	if natsURL == "" {
		dir := filepath.Join(cfg.DataDir, "nats")
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("embedded NATS: create %s (set EDGESYNC_DATA_DIR to a writable directory): %w", dir, err)
		}
		port := 4222
		if l, err := net.Listen("tcp", "127.0.0.1:4222"); err == nil {
			l.Close()
		} else {
			port = -1
		}
		d.embedded, err = natsserver.Start(natsserver.Options{Port: port, StoreDir: dir})
		if err != nil {
			return nil, err
		}
		natsURL = d.embedded.URL()
		log.Info("EDGESYNC_NATS_URL is empty: started an embedded NATS server with JetStream (development only)",
			zap.String("url", natsURL), zap.String("store_dir", dir))
	}
	opts := []natsgo.Option{natsgo.Name("edgesync"), natsgo.MaxReconnects(-1), natsgo.ReconnectWait(250 * time.Millisecond),
		natsgo.RetryOnFailedConnect(true), natsgo.Timeout(5 * time.Second)}
	if cfg.NATSCredsFile != "" {
		opts = append(opts, natsgo.UserCredentials(cfg.NATSCredsFile))
	}
	d.nc, err = natsgo.Connect(natsURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", config.RedactURL(natsURL), err)
	}
	d.js, err = natssink.NewJetStream(d.nc, natssink.Config{})
	if err != nil {
		return nil, err
	}
	if err := d.preflight(ctx); err != nil {
		return nil, err
	}
	d.metrics = pipeline.NewMetrics(d.reg)
	d.leaderG = newLeaderGauge(d.reg)
	d.galleryMetrics = gallerystatus.NewMetrics(d.reg)
	rc := ReconcileConfig(cfg)
	if cfg.ICPURL != "" {
		removed, err := mirror.PrepareSpool(SpoolDir(cfg))
		if err != nil {
			return nil, err
		}
		if removed > 0 {
			log.Info("removed ICP spool files left by an earlier run", zap.Int("files", removed), zap.String("dir", SpoolDir(cfg)))
		}
		if d.icp, err = newMirror(d); err != nil {
			return nil, err
		}
		rc.ICP = d.icp.Checker()
	}
	rc.Publish = jsPublish(d.js)
	d.recon = reconcile.New(rc, d.pool, log.With(zap.String("component", "reconcile")), d.reg)
	d.overview = newOverview(d.pool, d.reg, log)
	d.overview.health = api.NewHealth(d.backendChecks(), 0, log)
	feedCfg := ssefeed.Config{Stream: cfg.Stream, Subjects: domain.Subjects{Prefix: cfg.SubjectPrefix}}
	if cfg.PresenceMaxBytes > 0 {
		// Invalidated by the SSE feed's consumer, so leader and standby keep
		// their copies current the same way.
		d.presence = presencecache.New(presencecache.Config{MaxBytes: cfg.PresenceMaxBytes}, d.reg)
		feedCfg.Invalidator = d.presence
	}
	d.api = api.New(api.Config{AdminToken: cfg.AdminToken, Tables: cfg.Tables, ICPMirror: d.icp != nil, MaxSSEClients: cfg.SSEMaxClients}, api.Deps{
		Pool:       d.pool,
		Logger:     log,
		Registry:   d.reg,
		Metrics:    promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg}),
		Ready:      d.ready.Load,
		Reconciler: d.recon,
		Health:     d.overview.health,
		Presence:   d.presence,
	})
	// Every instance, leader or standby, feeds its SSE hub (and its presence
	// cache) from the stream.
	d.feed = ssefeed.New(feedCfg, d.js, d.api.Events(), log, d.reg)
	if cfg.AdminToken == "" {
		log.Warn("EDGESYNC_ADMIN_TOKEN is empty: write and admin endpoints answer 403 until it is set")
	}
	d.http = d.api.HTTPServer(cfg.HTTPAddr)
	d.listener, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on EDGESYNC_HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
	}
	ok = true
	return d, nil
}

func (d *Daemon) backendChecks() []api.BackendCheck {
	return scrubChecks(d.cfg, d.rawBackendChecks())
}

func (d *Daemon) rawBackendChecks() []api.BackendCheck {
	checks := []api.BackendCheck{
		{Name: "postgres", Check: api.PoolCheck(d.pool)},
		{Name: "nats", Check: func(ctx context.Context) error {
			if d.nc == nil || !d.nc.IsConnected() {
				return api.Unhealthy("not connected")
			}
			_, err := d.nc.RTT()
			return err
		}},
	}
	if d.cfg.ICPURL != "" {
		checks = append(checks, api.BackendCheck{Name: "icp", Check: httpCheck(strings.TrimRight(d.cfg.ICPURL, "/")+"/api/v2/status", true)})
	}
	if d.cfg.BlobURL != "" {
		checks = append(checks, api.BackendCheck{Name: "blob", Check: httpCheck(d.cfg.BlobURL, false)})
	}
	return checks
}

// httpCheck reaches url; with want2xx the answer must be a success, else any
// HTTP answer proves the host is up.
func httpCheck(url string, want2xx bool) func(ctx context.Context) error {
	client := &http.Client{Timeout: 5 * time.Second}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if want2xx && resp.StatusCode/100 != 2 {
			return api.Unhealthy("answered HTTP %d", resp.StatusCode)
		}
		return nil
	}
}

// NATSURL is the NATS server the daemon publishes to (the embedded one's
// when EDGESYNC_NATS_URL is empty).
func (d *Daemon) NATSURL() string { return d.nc.ConnectedUrl() }

// Addr is the HTTP listener's address.
func (d *Daemon) Addr() string { return d.listener.Addr().String() }

// Run serves until ctx ends or a fatal error, then shuts down in order
// within EDGESYNC_SHUTDOWN_TIMEOUT: stop reading WAL and drain the sinks
// (inside the leader's work), stop reconcile, stop HTTP, drain NATS.
func (d *Daemon) Run(parent context.Context) error {
	defer d.close()
	g, ctx := errgroup.WithContext(parent)

	g.Go(func() error {
		if err := d.http.Serve(d.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server on %s: %w", d.Addr(), err)
		}
		return nil
	})
	d.ready.Store(true)
	d.log.Info("edgesync running", zap.String("http", d.Addr()), zap.String("slot", d.cfg.Slot))

	leader := NewLeader(d.cfg.DatabaseURL, d.cfg.Slot, time.Second, d.log.With(zap.String("component", "leader")), func(is bool) {
		d.leader.Store(is)
		if is {
			d.leaderG.Set(1)
		} else {
			d.leaderG.Set(0)
		}
	})
	g.Go(func() error { return leader.Run(ctx, d.lead) })
	// Every instance feeds its SSE hub from the stream, answers reconcile
	// requests (a queue group: one run per request) and keeps the storage
	// overview metrics.
	g.Go(func() error { return d.supervise(ctx, "SSE feed", d.feed.Run) })
	g.Go(func() error {
		return d.supervise(ctx, "reconcile NATS trigger", func(ctx context.Context) error { return d.recon.ServeNATS(ctx, d.nc, "") })
	})
	g.Go(func() error { d.overview.Run(ctx); return nil })

	// Shutdown: once ctx ends (signal or a fatal error), leave the Service,
	// let reconcile finish its chunk, stop HTTP, all within the one budget
	// EDGESYNC_SHUTDOWN_TIMEOUT that starts now. The pipeline drains inside
	// lead (which leader.Run waits for) within half of it.
	g.Go(func() error {
		<-ctx.Done()
		d.ready.Store(false)
		wctx, cancel := context.WithTimeout(context.Background(), d.cfg.ShutdownTimeout)
		defer cancel()
		_ = d.recon.Wait(wctx) // a running reconcile is cancelled; it is idempotent
		if err := d.http.Shutdown(wctx); err != nil {
			d.log.Warn("HTTP shutdown cut open connections (SSE clients reconnect to the other instance)", zap.Error(err))
		}
		return nil
	})
	err := g.Wait()
	if d.nc != nil {
		_ = d.nc.Drain()
	}
	d.log.Info("edgesync stopped")
	return err
}

// supervise runs a restartable component until ctx ends: an error is logged
// and the component restarted with backoff (reset after a minute of
// running). This is the one place that decides a failure is not fatal; a
// component that must stop the daemon runs directly in Run's group.
func (d *Daemon) supervise(ctx context.Context, name string, run func(ctx context.Context) error) error {
	return restart(ctx, d.log, name, run, nil)
}

func restart(ctx context.Context, log *zap.Logger, name string, run func(ctx context.Context) error, onError func(error) time.Duration) error {
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(200*time.Millisecond), backoff.WithMaxInterval(30*time.Second), backoff.WithMaxElapsedTime(0))
	for ctx.Err() == nil {
		started := time.Now()
		err := run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > time.Minute {
			bo.Reset()
		}
		wait := bo.NextBackOff()
		if onError != nil {
			if w := onError(err); w >= 0 {
				wait = w
			}
		}
		log.Error(name+" stopped; restarting", zap.Error(err), zap.Duration("retry_in", wait))
		sleep(ctx, wait)
	}
	return nil
}

// lead runs the leader's work until lctx ends: the pipeline (restarted with
// backoff after errors, never giving up), the gallery status tracker fed by
// it, the ICP mirror and the periodic reconcile.
func (d *Daemon) lead(lctx context.Context) {
	log := d.log.With(zap.String("component", "pipeline"))
	gallery := gallerystatus.New(galleryConfig(d.cfg), d.pool, jsPublish(d.js), d.log.With(zap.String("component", "gallerystatus")), d.galleryMetrics)
	// Changes noted by a previous leader were held in its memory: recheck.
	gallery.RecheckAll()
	g, ctx := errgroup.WithContext(lctx)
	g.Go(func() error { return d.supervise(ctx, "gallery status tracker", gallery.Run) })
	g.Go(func() error {
		return d.supervise(ctx, "periodic reconcile", func(ctx context.Context) error { return d.recon.RunEvery(ctx, d.cfg.ReconcileInterval) })
	})
	if d.icp != nil {
		g.Go(func() error { return d.supervise(ctx, "ICP mirror", d.icp.Run) })
	}
	hooks := pipeline.Hooks{
		EdgeChanged: func(ev pipeline.EdgeEvent) {
			gallery.MemoriesChanged(gallerystatus.MemoryKey{ID: ev.MemoryID, Type: ev.MemoryType})
			if d.icp != nil && ev.Backend == domain.BackendICP && ev.SyncState == domain.SyncMigrating {
				d.icp.Wake(ev.MemoryID, ev.MemoryType)
			}
		},
		GalleryChanged: func(id string) {
			if id == "" {
				gallery.RecheckAll()
				return
			}
			gallery.GalleriesChanged(id)
		},
		SlotLost: func() {
			if _, err := d.recon.Start(ctx, reconcile.TriggerSlotLost, false); err != nil {
				log.Error("request a reconcile after the lost slot", zap.Error(err))
			}
		},
	}
	p := pipeline.New(pipeline.Config{
		DatabaseURL:       d.cfg.DatabaseURL,
		Slot:              d.cfg.Slot,
		Publication:       d.cfg.Publication,
		Stream:            d.cfg.Stream,
		StreamReplicas:    d.cfg.StreamReplicas,
		StreamMaxBytes:    d.cfg.StreamMaxBytes,
		SubjectPrefix:     d.cfg.SubjectPrefix,
		Tables:            d.cfg.Tables,
		SnapshotEvents:    d.cfg.SnapshotEvents,
		DeleteICPEdges:    d.cfg.ICPEdgesOnDelete == domain.PolicyDelete,
		HeartbeatInterval: d.cfg.HeartbeatInterval,
		DrainTimeout:      d.cfg.ShutdownTimeout / 2,
		MemoryBudget:      memoryBudget(),
	}, d.pipePool, d.js, d.metrics, hooks, log)
	g.Go(func() error {
		return restart(ctx, log, "pipeline (resuming from the confirmed LSN)", p.Run, func(err error) time.Duration {
			d.metrics.Restarts.Inc()
			if cdc.IsSlotGone(err) {
				return 0 // the next session notices the lost slot and re-creates it
			}
			return -1
		})
	})
	_ = g.Wait() // every part returns nil: failures are restarted above
}

func (d *Daemon) close() {
	if d.listener != nil {
		d.listener.Close()
	}
	if d.nc != nil {
		d.nc.Close()
	}
	if d.embedded != nil {
		d.embedded.Shutdown()
	}
	if d.pool != nil {
		d.pool.Close()
	}
	if d.pipePool != nil {
		d.pipePool.Close()
	}
}
