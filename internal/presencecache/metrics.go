package presencecache

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	galleryHit, galleryMiss prometheus.Counter
	memoryHit, memoryMiss   prometheus.Counter
	fills                   prometheus.Counter
	discarded               prometheus.Counter
	tooLarge                prometheus.Counter
	evictions               prometheus.Counter
	invalidations           *prometheus.CounterVec
	bytes                   prometheus.Gauge
	active                  prometheus.Gauge
}

// newMetrics builds the cache's metrics and registers them on reg (nil:
// unregistered).
func newMetrics(reg prometheus.Registerer) *metrics {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgesync_presence_cache_requests_total",
		Help: "Presence requests the cache answered, by kind (gallery, memory) and result (hit: from memory; miss: read from Postgres, alone or shared with concurrent requests).",
	}, []string{"kind", "result"})
	m := &metrics{
		galleryHit:  requests.WithLabelValues("gallery", "hit"),
		galleryMiss: requests.WithLabelValues("gallery", "miss"),
		memoryHit:   requests.WithLabelValues("memory", "hit"),
		memoryMiss:  requests.WithLabelValues("memory", "miss"),
		fills: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgesync_presence_cache_fills_total", Help: "Reads from Postgres into the presence cache (one per key however many requests waited for it).",
		}),
		discarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgesync_presence_cache_discarded_total", Help: "Fills not kept because an invalidation raced them (they were served to their waiting requests only).",
		}),
		tooLarge: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgesync_presence_cache_too_large_total", Help: "Fills not kept because the entry would take more than a quarter of the cache's bound.",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgesync_presence_cache_evictions_total", Help: "Entries evicted to keep the presence cache under EDGESYNC_PRESENCE_CACHE_BYTES.",
		}),
		invalidations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgesync_presence_cache_invalidations_total", Help: "Invalidations the presence cache received, by kind (memory: an edge event; gallery: a gallery status event; reset: the stream feed (re)subscribed or stopped).",
		}, []string{"kind"}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgesync_presence_cache_bytes", Help: "What the presence cache holds, as counted against its bound.",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgesync_presence_cache_active", Help: "1 while the presence cache serves (its stream feed follows the stream).",
		}),
	}
	if reg != nil {
		reg.MustRegister(requests, m.fills, m.discarded, m.tooLarge, m.evictions, m.invalidations, m.bytes, m.active)
	}
	return m
}
