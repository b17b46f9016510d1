package api

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	panics     prometheus.Counter
	sseClients prometheus.Gauge
	sseDropped prometheus.Counter
}

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
	}
	if reg == nil {
		return m
	}
	m.requests = register(reg, m.requests)
	m.duration = register(reg, m.duration)
	m.panics = register(reg, m.panics)
	m.sseClients = register(reg, m.sseClients)
	m.sseDropped = register(reg, m.sseDropped)
	return m
}

// register registers c, or reuses the collector already registered under the
// same name (a second Server on one registry, as in tests).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err) // a name clash with another collector is a programming error
	}
	return c
}

func (m *metrics) observe(route string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, statusLabel(code)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}
