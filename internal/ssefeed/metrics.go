package ssefeed

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	events     *prometheus.CounterVec
	backfilled prometheus.Counter
	skipped    prometheus.Counter
	restarts   prometheus.Counter
	seq        prometheus.Gauge
	caughtUp   prometheus.Gauge
}

// newMetrics builds the feed's metrics and registers them on reg (nil:
// unregistered). A second Feed needs its own registry.
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
	if reg != nil {
		reg.MustRegister(m.events, m.backfilled, m.skipped, m.restarts, m.seq, m.caughtUp)
	}
	return m
}
