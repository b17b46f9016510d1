package api

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	panics     prometheus.Counter
	sseClients prometheus.Gauge
	sseDropped prometheus.Counter
	// sseRejected counts streams refused at the client cap.
	sseRejected prometheus.Counter
}

// newMetrics builds the server's metrics and registers them on reg (nil:
// unregistered). A second Server needs its own registry.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgesync_http_requests_total", Help: "HTTP requests by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "edgesync_http_request_duration_seconds", Help: "HTTP request latency by route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"route"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgesync_http_panics_total", Help: "Handler panics recovered into 500 answers.",
		}),
		sseClients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgesync_sse_clients", Help: "Connected sync-status stream clients.",
		}),
		sseDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgesync_sse_dropped_total", Help: "Stream clients dropped for falling behind.",
		}),
		sseRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgesync_sse_rejected_total", Help: "Stream requests refused with 503 because the client cap (EDGESYNC_SSE_MAX_CLIENTS) was reached.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.panics, m.sseClients, m.sseDropped, m.sseRejected)
	}
	return m
}

func (m *metrics) observe(route string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, statusLabel(code)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}
