package reconcile

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Finding kinds, as in the report and the found_total metric.
const (
	KindOrphans       = "orphans"
	KindMissing       = "missing"
	KindDrift         = "drift"
	KindStuck         = "stuck"
	KindFailedRetried = "failed_retried"
	KindICPDrift      = "icp_drift"
)

type metrics struct {
	runs     *prometheus.CounterVec
	found    *prometheus.CounterVec
	duration prometheus.Histogram
}

// newMetrics builds a Service's metrics and registers them on reg (nil:
// unregistered, as for one-shot CLI runs). A second Service needs its own
// registry.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgesync_reconcile_runs_total",
			Help: "Reconcile runs by result (ok, error, dry_run).",
		}, []string{"result"}),
		found: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgesync_reconcile_found_total",
			Help: "Findings of reconcile runs by kind (dry runs included).",
		}, []string{"kind"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "edgesync_reconcile_duration_seconds",
			Help:    "Duration of reconcile runs.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 12), // 50ms .. ~100s
		}),
	}
	if reg != nil {
		reg.MustRegister(m.runs, m.found, m.duration)
	}
	// Zero series exist from the start, so a rate() over them is defined
	// before the first finding.
	for _, r := range []string{"ok", "error", "dry_run"} {
		m.runs.WithLabelValues(r)
	}
	for _, k := range []string{KindOrphans, KindMissing, KindDrift, KindStuck, KindFailedRetried, KindICPDrift} {
		m.found.WithLabelValues(k)
	}
	return m
}

func (m *metrics) observe(rep *Report, err error, d time.Duration) {
	result := "ok"
	switch {
	case err != nil:
		result = "error"
	case rep.DryRun:
		result = "dry_run"
	}
	m.runs.WithLabelValues(result).Inc()
	m.duration.Observe(d.Seconds())
	for k, v := range map[string]int64{
		KindOrphans: rep.Orphans, KindMissing: rep.Missing, KindDrift: rep.Drift,
		KindStuck: rep.Stuck, KindFailedRetried: rep.FailedRetried, KindICPDrift: rep.ICPDrift,
	} {
		m.found.WithLabelValues(k).Add(float64(v))
	}
}
