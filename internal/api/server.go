package api

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/internal/presencecache"
	"github.com/edgesync/edgesync/reconcile"
)

// Config is what the daemon decides for the server.
type Config struct {
	// AdminToken guards every write and admin route; empty turns them off
	// (403).
	AdminToken string
	// Tables maps memory types to app tables.
	Tables []domain.Table
	// ICPMirror says the ICP mirror runs (EDGESYNC_ICP_URL is set). Without it
	// the store-forever routes answer 503 and queue nothing: a request that
	// cannot be carried out must not sit migrating until reconcile calls it stuck.
	ICPMirror bool
	// HandlerTimeout bounds every request except the SSE stream (default 10s).
	HandlerTimeout time.Duration
	// MaxBodyBytes bounds request bodies (default 1 MiB); larger ones get 413.
	MaxBodyBytes int64

	// SSEKeepAlive is the interval of keep-alive comments (default 15s).
	SSEKeepAlive time.Duration
	// SSEClientBuffer is how many events a stream client may lag behind before
	// it is dropped (default 256).
	SSEClientBuffer int
	// SSEReplay is how many recent events are kept for Last-Event-ID resume
	// (default 4096).
	SSEReplay int
	// SSEWriteTimeout bounds one write to a stream client (default 10s).
	SSEWriteTimeout time.Duration
	// MaxSSEClients caps the stream clients of this instance (default
	// 1000); beyond it the stream answers 503 with Retry-After.
	MaxSSEClients int
	// SSEGalleryMembers caps the gallery items this instance holds for
	// stream clients that filter by gallery (?gallery=), over all their
	// galleries (default 500000, about 20 MiB); a gallery is held once
	// however many clients watch it. Beyond it such a stream answers 503.
	SSEGalleryMembers int
	// SSEGalleryRefresh is how often a watched gallery's items are reloaded
	// (default 30s): gallery_items changes are not in the event stream, so
	// an item added to a gallery reaches its filter within this interval.
	SSEGalleryRefresh time.Duration
}

// DefaultMaxSSEClients is Config.MaxSSEClients when unset.
const DefaultMaxSSEClients = 1000

// DefaultSSEGalleryMembers is Config.SSEGalleryMembers when unset.
const DefaultSSEGalleryMembers = 500_000

// Reconciler starts and reports reconcile runs; the reconcile package's
// runner satisfies it. Start must return once the run is recorded: the run
// itself must not be bound to ctx, which ends with the request. List returns
// the latest recorded runs, newest first.
type Reconciler interface {
	Start(ctx context.Context, trigger string, dryRun bool) (string, error)
	Get(ctx context.Context, id string) (reconcile.Run, error)
	List(ctx context.Context, limit int) ([]reconcile.Run, error)
}

// BackendCheck is one backend of GET /api/health/backends.
type BackendCheck struct {
	Name  string
	Check func(ctx context.Context) error
}

// PoolCheck is a BackendCheck function for a Postgres pool.
func PoolCheck(pool *pgxpool.Pool) func(ctx context.Context) error {
	return func(ctx context.Context) error { return pool.Ping(ctx) }
}

// Deps are the server's collaborators.
type Deps struct {
	Pool     *pgxpool.Pool
	Logger   *zap.Logger
	Registry prometheus.Registerer // may be nil: no metrics registered
	Metrics  http.Handler          // served at /metrics; nil: the default gatherer
	Ready    func() bool           // /readyz; nil: always ready
	// Reconciler may be nil (no reconcile on this instance): the admin
	// reconcile routes then answer 503.
	Reconciler Reconciler
	// Health answers GET /api/health/backends from its last check; nil:
	// no backends are reported.
	Health *Health
	// Presence answers gallery first pages and memory presence from memory
	// while it follows the stream; nil: every answer reads Postgres.
	Presence *presencecache.Cache
}

// Server is the HTTP API. Build it with New; serve Handler or HTTPServer.
type Server struct {
	cfg     Config
	deps    Deps
	log     *zap.Logger
	pool    *pgxpool.Pool
	tables  map[string]domain.Table
	hub     *Hub
	members *membership
	metrics *metrics
	handler http.Handler

	noTokenOnce sync.Once
}

// New builds a server; it does no I/O.
func New(cfg Config, deps Deps) *Server {
	if cfg.HandlerTimeout <= 0 {
		cfg.HandlerTimeout = 10 * time.Second
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.SSEKeepAlive <= 0 {
		cfg.SSEKeepAlive = 15 * time.Second
	}
	if cfg.SSEClientBuffer <= 0 {
		cfg.SSEClientBuffer = 256
	}
	if cfg.SSEReplay <= 0 {
		cfg.SSEReplay = 4096
	}
	if cfg.SSEWriteTimeout <= 0 {
		cfg.SSEWriteTimeout = 10 * time.Second
	}
	if cfg.MaxSSEClients <= 0 {
		cfg.MaxSSEClients = DefaultMaxSSEClients
	}
	if cfg.SSEGalleryMembers <= 0 {
		cfg.SSEGalleryMembers = DefaultSSEGalleryMembers
	}
	if cfg.SSEGalleryRefresh <= 0 {
		cfg.SSEGalleryRefresh = 30 * time.Second
	}
	log := deps.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.With(zap.String("component", "api"))
	if deps.Ready == nil {
		deps.Ready = func() bool { return true }
	}
	if deps.Metrics == nil {
		deps.Metrics = promhttp.Handler()
	}
	s := &Server{
		cfg:    cfg,
		deps:   deps,
		log:    log,
		pool:   deps.Pool,
		tables: make(map[string]domain.Table, len(cfg.Tables)),
	}
	for _, t := range cfg.Tables {
		s.tables[t.MemoryType] = t
	}
	s.metrics = newMetrics(deps.Registry)
	s.members = newMembership(deps.Pool, cfg.SSEGalleryMembers, cfg.SSEGalleryRefresh)
	s.hub = newHub(cfg.SSEReplay, cfg.SSEClientBuffer, cfg.MaxSSEClients, s.metrics)
	s.handler = s.routes()
	return s
}

// Handler is the whole API with its middleware.
func (s *Server) Handler() http.Handler { return s.handler }

// Events is the hub that feeds GET /api/storage/sync-status/stream.
func (s *Server) Events() *Hub { return s.hub }

// HTTPServer returns an http.Server for addr with timeouts that protect
// against slow clients. WriteTimeout covers ordinary handlers (their own
// deadline plus a margin); the SSE route lifts both connection deadlines and
// sets one per write instead. Shutdown closes the hub so stream handlers
// return and Shutdown does not wait for them.
func (s *Server) HTTPServer(addr string) *http.Server {
	srv := &http.Server{
		Addr:              addr,
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       s.cfg.HandlerTimeout + 30*time.Second,
		WriteTimeout:      s.cfg.HandlerTimeout + 5*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          zap.NewStdLog(s.log.Named("http")),
	}
	srv.RegisterOnShutdown(s.hub.Close)
	return srv
}

func (s *Server) table(memoryType string) (domain.Table, bool) {
	t, ok := s.tables[memoryType]
	return t, ok
}
