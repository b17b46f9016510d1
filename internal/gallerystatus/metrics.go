package gallerystatus

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	refresh   prometheus.Histogram
	events    prometheus.Counter
	errors    prometheus.Counter
	overflows prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		refresh: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "edgesync_gallery_mv_refresh_seconds",
			Help:    "Duration of gallery_presence_mv refreshes.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgesync_gallery_status_events_total", Help: "Gallery status changes published.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgesync_gallery_status_errors_total", Help: "Failed tracker passes and refreshes (retried).",
		}),
		overflows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgesync_gallery_status_overflows_total", Help: "Times the pending set overflowed into a recheck of every gallery.",
		}),
	}
	if reg != nil {
		m.refresh = register(reg, m.refresh)
		m.events = register(reg, m.events)
		m.errors = register(reg, m.errors)
		m.overflows = register(reg, m.overflows)
	}
	return m
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err) // a clash with another collector's name is a programming error
	}
	return c
}
