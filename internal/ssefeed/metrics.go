package ssefeed

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	events     *prometheus.CounterVec
	backfilled prometheus.Counter
	skipped    prometheus.Counter
	restarts   prometheus.Counter
	seq        prometheus.Gauge
	caughtUp   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgesync_sse_feed_events_total", Help: "Stream messages the SSE feed handed to the hub live, by event name (sync, progress).",
		}, []string{"event"}),
		backfilled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgesync_sse_feed_backfilled_total", Help: "Stream messages from before the start read into the SSE resume ring.",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgesync_sse_feed_redelivered_total", Help: "Stream messages delivered again after a consumer reset and not handed to the hub twice.",
		}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgesync_sse_feed_restarts_total", Help: "Times the SSE feed subscribed to the stream again after an error.",
		}),
		seq: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgesync_sse_feed_stream_seq", Help: "Stream sequence of the last message the SSE feed read.",
		}),
		caughtUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgesync_sse_feed_caught_up", Help: "1 once the SSE feed has read the stream up to its end at start (its resume ring is filled and new events go live to clients).",
		}),
	}
	if reg == nil {
		return m
	}
	m.events = register(reg, m.events)
	m.backfilled = register(reg, m.backfilled)
	m.skipped = register(reg, m.skipped)
	m.restarts = register(reg, m.restarts)
	m.seq = register(reg, m.seq)
	m.caughtUp = register(reg, m.caughtUp)
	return m
}

// register registers c, or reuses the collector already registered under the
// same name (two feeds on one registry, as in tests).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}
