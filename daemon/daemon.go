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
	"sync"
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

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/internal/api"
	"github.com/edgesync/edgesync/internal/gallerystatus"
	"github.com/edgesync/edgesync/internal/natsserver"
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

// Daemon is `edgesync run`: it owns every long-running part.
type Daemon struct {
	cfg      config.Config
	log      *zap.Logger
	pool     *pgxpool.Pool
	nc       *natsgo.Conn
	embedded *natsserver.Server
	reg      *prometheus.Registry
	metrics  *Metrics
	api      *api.Server
	http     *http.Server
	listener net.Listener
	leader   atomic.Bool
	ready    atomic.Bool
	js       jetstream.JetStream
	recon    *reconcile.Service
	overview *overview
	icp      *mirror // nil when the ICP mirror is off
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
	// The pipeline, the ICP mirror's workers, reconcile, the gallery tracker
	// and the API share the pool.
	if pcfg.MaxConns < 16 {
		pcfg.MaxConns = 16
	}
	d.pool, err = pgxpool.NewWithConfig(ctx, pcfg)
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
	d.js, err = jetstream.New(d.nc)
	if err != nil {
		return nil, err
	}
	if err := d.preflight(ctx); err != nil {
		return nil, err
	}
	d.metrics = NewMetrics(d.reg)
	rc := ReconcileConfig(cfg)
	if cfg.ICPURL != "" {
		d.icp = newMirror(d)
		rc.ICP = d.icp.checker
	}
	rc.Publish = func(ctx context.Context, subject string, data []byte) error {
		return natssink.PublishSync(ctx, d.js, subject, "", data)
	}
	d.recon = reconcile.New(rc, d.pool, log.With(zap.String("component", "reconcile")), d.reg)
	d.overview = newOverview(d.pool, d.reg, log)
	d.overview.checks = d.backendChecks()
	d.api = api.New(api.Config{AdminToken: cfg.AdminToken, Tables: apiTables(cfg.Tables)}, api.Deps{
		Pool:       d.pool,
		Logger:     log,
		Registry:   d.reg,
		Metrics:    promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg}),
		Ready:      d.ready.Load,
		Reconciler: d.recon,
		Backends:   d.backendChecks(),
	})
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

func apiTables(ts []config.Table) []api.Table {
	out := make([]api.Table, 0, len(ts))
	for _, t := range ts {
		out = append(out, api.Table(t))
	}
	return out
}

func (d *Daemon) backendChecks() []api.BackendCheck {
	return scrubChecks(d.cfg, d.rawBackendChecks())
}

func (d *Daemon) rawBackendChecks() []api.BackendCheck {
	checks := []api.BackendCheck{
		{Name: "postgres", Check: api.PoolCheck(d.pool)},
		{Name: "nats", Check: func(ctx context.Context) error {
			if d.nc == nil || !d.nc.IsConnected() {
				return errors.New("not connected")
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
			return fmt.Errorf("%s answered %s", url, resp.Status)
		}
		return nil
	}
}

// NATSURL is the NATS server the daemon publishes to (the embedded one's
// when EDGESYNC_NATS_URL is empty).
func (d *Daemon) NATSURL() string { return d.nc.ConnectedUrl() }

// Addr is the HTTP listener's address.
func (d *Daemon) Addr() string { return d.listener.Addr().String() }

// Run serves until ctx ends, then shuts down in order within the configured
// timeout: stop reading WAL and drain the sinks, stop HTTP, drain NATS.
func (d *Daemon) Run(parent context.Context) error {
	defer d.close()
	// A failing HTTP server stops everything too.
	ctx, stop := context.WithCancel(parent)
	defer stop()
	var wg sync.WaitGroup
	httpErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := d.http.Serve(d.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			httpErr <- err
		}
	}()
	d.ready.Store(true)
	d.log.Info("edgesync running", zap.String("http", d.Addr()), zap.String("slot", d.cfg.Slot))

	leader := NewLeader(d.cfg.DatabaseURL, d.cfg.Slot, time.Second, d.log.With(zap.String("component", "leader")), func(is bool) {
		d.leader.Store(is)
		if is {
			d.metrics.Leader.Set(1)
		} else {
			d.metrics.Leader.Set(0)
		}
	})
	wg.Add(1)
	leaderDone := make(chan struct{})
	go func() {
		defer wg.Done()
		defer close(leaderDone)
		_ = leader.Run(ctx, d.lead)
	}()

	// Every instance answers reconcile requests (a queue group: one run
	// per request) and keeps the storage overview metrics.
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := d.recon.ServeNATS(ctx, d.nc, ""); err != nil {
			d.log.Error("reconcile NATS trigger", zap.Error(err))
		}
	}()
	go func() { defer wg.Done(); d.overview.Run(ctx) }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-httpErr:
		err = fmt.Errorf("http server on %s: %w", d.Addr(), err)
		stop()
	}
	d.ready.Store(false) // shutting down: take this instance out of the Service
	<-leaderDone         // the pipeline drains inside lead
	wctx, wcancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = d.recon.Wait(wctx) // a running reconcile is cancelled; it is idempotent
	wcancel()
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = d.http.Shutdown(sctx)
	wg.Wait()
	if d.nc != nil {
		_ = d.nc.Drain()
	}
	d.log.Info("edgesync stopped")
	return err
}

// lead runs the leader's work until lctx ends: the pipeline (restarted with
// backoff after errors, never giving up), the gallery status tracker fed by
// it, and the periodic reconcile.
func (d *Daemon) lead(lctx context.Context) {
	log := d.log.With(zap.String("component", "pipeline"))
	hub := d.api.Events()
	gallery := gallerystatus.New(galleryConfig(d.cfg), d.pool, jsPublish(d.js), d.log.With(zap.String("component", "gallerystatus")), d.reg)
	// Changes noted by a previous leader were held in its memory: recheck.
	gallery.RecheckAll()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(2)
	go func() { defer wg.Done(); _ = gallery.Run(lctx) }()
	go func() { defer wg.Done(); _ = d.recon.RunEvery(lctx, d.cfg.ReconcileInterval) }()
	if d.icp != nil {
		wg.Add(1)
		go func() { defer wg.Done(); d.icp.Run(lctx) }()
	}
	hooks := Hooks{
		EdgeChanged: func(ev EdgeEvent) {
			hub.PublishEdge(ev.ID, ev.Data, ev.Backend, ev.SyncState)
			gallery.MemoriesChanged(gallerystatus.MemoryKey{ID: ev.MemoryID, Type: ev.MemoryType})
			if d.icp != nil && ev.Backend == "icp-canister" && ev.SyncState == "migrating" {
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
			if _, err := d.recon.Start(lctx, reconcile.TriggerSlotLost, false); err != nil {
				log.Error("request a reconcile after the lost slot", zap.Error(err))
			}
		},
	}
	p := NewPipeline(PipelineConfig{
		DatabaseURL:       d.cfg.DatabaseURL,
		Slot:              d.cfg.Slot,
		Publication:       d.cfg.Publication,
		Stream:            d.cfg.Stream,
		SubjectPrefix:     d.cfg.SubjectPrefix,
		Tables:            d.cfg.Tables,
		SnapshotEvents:    d.cfg.SnapshotEvents,
		DeleteICPEdges:    d.cfg.ICPEdgesOnDelete == "delete",
		HeartbeatInterval: d.cfg.HeartbeatInterval,
		DrainTimeout:      d.cfg.ShutdownTimeout / 2,
	}, d.pool, d.nc, d.metrics, hooks, log)
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(200*time.Millisecond), backoff.WithMaxInterval(30*time.Second), backoff.WithMaxElapsedTime(0))
	for lctx.Err() == nil {
		started := time.Now()
		err := p.Run(lctx)
		if lctx.Err() != nil {
			return
		}
		if time.Since(started) > time.Minute {
			bo.Reset()
		}
		wait := bo.NextBackOff()
		d.metrics.Restarts.Inc()
		log.Error("pipeline stopped; restarting from the confirmed LSN", zap.Error(err), zap.Duration("retry_in", wait))
		if cdc.IsSlotGone(err) {
			wait = 0 // the next session notices the lost slot and re-creates it
		}
		sleep(lctx, wait)
	}
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
}
