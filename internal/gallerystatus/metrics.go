package gallerystatus

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the tracker's collectors. The daemon builds a tracker on every
// leadership term, so it creates these once per process and hands them to
// each New.
type Metrics struct {
	refresh   prometheus.Histogram
	events    prometheus.Counter
	errors    prometheus.Counter
	overflows prometheus.Counter
}

// NewMetrics builds the tracker's metrics and registers them on reg (nil:
// unregistered). Registering twice on one registry panics: create them once.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
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
		reg.MustRegister(m.refresh, m.events, m.errors, m.overflows)
	}
	return m
}
