package mirror

import "github.com/prometheus/client_golang/prometheus"

// Job results, the values of edgesync_icp_jobs_total's result label.
const (
	resultOK     = "ok"
	resultRetry  = "retry"
	resultFailed = "failed"
)

// Metrics are the mirror's Prometheus collectors (CONTRACT section 9). Make them once per
// registry: they outlive every Run.
type Metrics struct {
	uploadBytes    prometheus.Counter
	uploadFailures prometheus.Counter
	jobs           *prometheus.CounterVec
	uploading      prometheus.Gauge
}

// NewMetrics makes the collectors and registers them on reg (MustRegister: registering twice is
// a programming error). Tests pass a fresh prometheus.NewRegistry().
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
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
	reg.MustRegister(m.uploadBytes, m.uploadFailures, m.jobs, m.uploading)
	return m
}
