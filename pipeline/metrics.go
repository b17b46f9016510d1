package pipeline

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the pipeline's Prometheus metrics. Create them once per
// process: a leader that loses and regains the lock reuses them.
type Metrics struct {
	Events        *prometheus.CounterVec
	ConfirmedLSN  prometheus.Gauge
	SlotLag       prometheus.Gauge
	PublishErrors prometheus.Counter
	SlotLost      prometheus.Counter
	EdgesWritten  *prometheus.CounterVec
	SnapshotEdges prometheus.Counter
	Restarts      prometheus.Counter
	InFlight      prometheus.Gauge
	// DecodeLag is commit time → the pipeline seeing the commit: how far
	// behind the slot the pipeline runs.
	DecodeLag prometheus.Histogram
}

// NewMetrics registers the pipeline metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgesync_cdc_events_total", Help: "Changes decoded from the slot, by table and op.",
		}, []string{"table", "op"}),
		ConfirmedLSN: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgesync_cdc_confirmed_lsn", Help: "The LSN last confirmed to Postgres (as a number).",
		}),
		SlotLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgesync_cdc_slot_lag_bytes", Help: "pg_current_wal_lsn() - confirmed_flush_lsn of the slot.",
		}),
		PublishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgesync_publish_errors_total", Help: "Failed JetStream publishes (each makes the pipeline replay from the confirmed LSN).",
		}),
		SlotLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgesync_cdc_slot_lost_total", Help: "Times the replication slot was found lost or invalidated and re-created.",
		}),
		EdgesWritten: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgesync_edges_written_total", Help: "Edge rows created, updated or deleted by the pipeline.",
		}, []string{"action"}),
		SnapshotEdges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgesync_snapshot_edges_created_total", Help: "Edges created by initial snapshots (backfill).",
		}),
		Restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgesync_cdc_restarts_total", Help: "Pipeline sessions that ended in an error and were restarted.",
		}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgesync_cdc_inflight_transactions", Help: "Transactions received but not yet durable.",
		}),
		DecodeLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "edgesync_cdc_decode_lag_seconds", Help: "Commit time to the pipeline receiving the commit.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Events, m.ConfirmedLSN, m.SlotLag, m.PublishErrors, m.SlotLost,
			m.EdgesWritten, m.SnapshotEdges, m.Restarts, m.InFlight, m.DecodeLag)
	}
	return m
}
