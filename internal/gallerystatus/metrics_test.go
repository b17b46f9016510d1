package gallerystatus

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestNewMetrics_OncePerProcess: the metrics are registered once and shared
// by trackers built later (the daemon builds one per leadership term); a
// second registration on the same registry is a programming error.
func TestNewMetrics_OncePerProcess(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	a := New(Config{}, nil, nil, nil, m)
	b := New(Config{}, nil, nil, nil, m)
	a.m.events.Inc()
	b.m.events.Inc()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "edgesync_gallery_status_events_total" {
			got = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if got != 2 {
		t.Errorf("events_total = %v, want 2 (both terms' trackers count on the one collector)", got)
	}
	defer func() {
		if recover() == nil {
			t.Error("registering the metrics twice on one registry did not panic")
		}
	}()
	NewMetrics(reg)
}
