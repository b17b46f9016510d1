package daemon

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/internal/api"
)

// overview keeps the storage overview and backend health metrics (seed items
// 91, 102, 105). The edge counts come from one GROUP BY every interval, not
// from a scan per scrape, so scrapes stay cheap whatever the table size.
type overview struct {
	pool     *pgxpool.Pool
	log      *zap.Logger
	health   *api.Health // also answers GET /api/health/backends
	every    time.Duration
	edges    *prometheus.GaugeVec
	bytes    *prometheus.GaugeVec
	sync     *prometheus.GaugeVec
	memories *prometheus.GaugeVec
	up       *prometheus.GaugeVec
	latency  *prometheus.GaugeVec
}

func newOverview(pool *pgxpool.Pool, reg prometheus.Registerer, log *zap.Logger) *overview {
	o := &overview{
		pool: pool, log: log, every: 30 * time.Second,
		edges: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edgesync_edges", Help: "storage_edges rows by backend, artifact and presence."},
			[]string{"backend", "artifact", "present"}),
		bytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edgesync_edges_bytes", Help: "Sum of size_bytes of storage_edges rows by backend, artifact and presence."},
			[]string{"backend", "artifact", "present"}),
		sync: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edgesync_sync_edges", Help: "storage_edges rows by backend and sync_state."},
			[]string{"backend", "state"}),
		memories: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edgesync_memories", Help: "Memories with a present metadata edge in Postgres, by type."},
			[]string{"memory_type"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edgesync_backend_up", Help: "1 when the backend answered its last health check."},
			[]string{"backend"}),
		latency: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edgesync_backend_latency_seconds", Help: "Latency of the backend's last health check."},
			[]string{"backend"}),
	}
	if reg != nil {
		reg.MustRegister(o.edges, o.bytes, o.sync, o.memories, o.up, o.latency)
	}
	return o
}

// Run refreshes the metrics until ctx ends.
func (o *overview) Run(ctx context.Context) {
	health := time.NewTicker(15 * time.Second)
	defer health.Stop()
	counts := time.NewTicker(o.every)
	defer counts.Stop()
	o.checkBackends(ctx)
	o.count(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-health.C:
			o.checkBackends(ctx)
		case <-counts.C:
			o.count(ctx)
		}
	}
}

func (o *overview) checkBackends(ctx context.Context) {
	if o.health == nil {
		return
	}
	for _, st := range o.health.Check(ctx) {
		o.latency.WithLabelValues(st.Name).Set(st.LatencyMS / 1000)
		if st.OK {
			o.up.WithLabelValues(st.Name).Set(1)
		} else {
			o.up.WithLabelValues(st.Name).Set(0)
		}
	}
}

func (o *overview) count(ctx context.Context) {
	rows, err := o.pool.Query(ctx, `SELECT memory_type::text, backend::text, artifact::text, present, sync_state::text, count(*), coalesce(sum(size_bytes), 0)
		FROM storage_edges GROUP BY 1, 2, 3, 4, 5`)
	if err != nil {
		if ctx.Err() == nil {
			o.log.Warn("storage overview", zap.Error(err))
		}
		return
	}
	defer rows.Close()
	type k3 struct{ a, b, c string }
	edges, bytes := map[k3]float64{}, map[k3]float64{}
	sync := map[[2]string]float64{}
	mems := map[string]float64{}
	for rows.Next() {
		var typ, backend, artifact, state string
		var present bool
		var n, size int64
		if err := rows.Scan(&typ, &backend, &artifact, &present, &state, &n, &size); err != nil {
			return
		}
		p := "false"
		if present {
			p = "true"
		}
		k := k3{backend, artifact, p}
		edges[k] += float64(n)
		bytes[k] += float64(size)
		sync[[2]string{backend, state}] += float64(n)
		if backend == domain.BackendNeon && artifact == domain.ArtifactMetadata && present {
			mems[typ] += float64(n)
		}
	}
	if rows.Err() != nil {
		return
	}
	o.edges.Reset()
	o.bytes.Reset()
	o.sync.Reset()
	o.memories.Reset()
	for k, v := range edges {
		o.edges.WithLabelValues(k.a, k.b, k.c).Set(v)
		o.bytes.WithLabelValues(k.a, k.b, k.c).Set(bytes[k])
	}
	for _, b := range domain.Backends() {
		for _, s := range domain.SyncStates() {
			o.sync.WithLabelValues(b, s).Set(sync[[2]string{b, s}])
		}
	}
	for _, t := range domain.MemoryTypes() {
		o.memories.WithLabelValues(t).Set(mems[t])
	}
}
