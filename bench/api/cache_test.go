package api

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgesync/edgesync/bench/internal/benchdata"
	"github.com/edgesync/edgesync/internal/api"
	"github.com/edgesync/edgesync/internal/presencecache"
)

// loadResult is one closed-loop run of many clients against one URL.
type loadResult struct {
	rps      float64
	p50, p99 time.Duration
	ok, fail int
	firstErr error
}

// load runs clients goroutines that GET url back to back on one shared
// client for dur.
func load(c *http.Client, url string, clients int, dur time.Duration) loadResult {
	var mu sync.Mutex
	var all []time.Duration
	var res loadResult
	stop := time.Now().Add(dur)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ds := make([]time.Duration, 0, 4096)
			fail := 0
			var first error
			for time.Now().Before(stop) {
				t0 := time.Now()
				if err := get(c, url); err != nil {
					fail++
					if first == nil {
						first = err
					}
					continue
				}
				ds = append(ds, time.Since(t0))
			}
			mu.Lock()
			all = append(all, ds...)
			res.fail += fail
			if res.firstErr == nil {
				res.firstErr = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.ok = len(all)
	res.rps = float64(res.ok) / time.Since(start).Seconds()
	res.p50, res.p99 = benchdata.Percentiles(all)
	return res
}

// cachedGalleryVsHealthz is the goal of the presence cache: with 50
// concurrent clients on one HTTP client, the 10,000-item gallery's first
// page reaches at least half the requests/s of /healthz, at least 5,000/s,
// with p99 at most 10 ms. Both run against one server with the cache, one
// after the other, for BENCH_API_DURATION each (default 10s). The cache
// follows no stream here: nothing changes the dataset during the run, so
// there is nothing to invalidate.
func cachedGalleryVsHealthz(b *testing.B, pool *pgxpool.Pool, d benchdata.Dataset) {
	reg := prometheus.NewRegistry()
	cache := presencecache.New(presencecache.Config{}, reg)
	cache.Following(true)
	s := api.New(api.Config{Tables: tables(), AdminToken: "bench"}, api.Deps{Pool: pool, Presence: cache})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := s.HTTPServer(ln.Addr().String())
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	base := "http://" + ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 200, MaxIdleConnsPerHost: 200}}

	dur := 10 * time.Second
	if v := os.Getenv("BENCH_API_DURATION"); v != "" {
		if dur, err = time.ParseDuration(v); err != nil {
			b.Fatal(err)
		}
	}
	healthz := base + "/healthz"
	gallery := base + "/api/galleries/" + d.BigGalleryID + "/presence?limit=50"
	// Warm up: connections open, the page in the cache.
	load(client, healthz, 50, time.Second)
	load(client, gallery, 50, time.Second)

	h := load(client, healthz, 50, dur)
	g := load(client, gallery, 50, dur)
	for _, r := range []struct {
		name string
		res  loadResult
	}{{"GET /healthz", h}, {"GET gallery presence, 10k gallery, first page", g}} {
		fmt.Printf("%-48s %8.0f req/s  p50 %6.3f ms  p99 %6.3f ms  (50 clients, %s, %d ok, %d failed)\n",
			r.name, r.res.rps, benchdata.MS(r.res.p50), benchdata.MS(r.res.p99), dur, r.res.ok, r.res.fail)
		if r.res.fail > 0 {
			b.Fatalf("%s: %d requests failed, first: %v", r.name, r.res.fail, r.res.firstErr)
		}
	}
	fmt.Printf("%-48s %s\n", "presence cache", cacheCounts(b, reg))
	ratio := g.rps / h.rps
	fmt.Printf("%-48s %8.2f  (goal >= 0.50)\n", "gallery first page / healthz", ratio)
	b.ReportMetric(h.rps, "healthz-req/s")
	b.ReportMetric(g.rps, "gallery-req/s")
	b.ReportMetric(ratio, "ratio")
	b.ReportMetric(benchdata.MS(g.p99), "gallery-p99-ms")
	if ratio < 0.5 {
		fmt.Printf("  goal missed: gallery first page below half of /healthz\n")
	}
	if g.rps < 5000 {
		fmt.Printf("  goal missed: gallery first page below 5,000 req/s\n")
	}
	if g.p99 > 10*time.Millisecond {
		fmt.Printf("  goal missed: gallery first page p99 > 10 ms\n")
	}
}

// cacheCounts sums up the cache's requests and fills, so a run shows it
// measured hits.
func cacheCounts(b *testing.B, reg *prometheus.Registry) string {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		switch mf.GetName() {
		case "edgesync_presence_cache_requests_total", "edgesync_presence_cache_fills_total":
			for _, m := range mf.GetMetric() {
				name := strings.TrimPrefix(strings.TrimSuffix(mf.GetName(), "_total"), "edgesync_presence_cache_")
				for _, l := range m.GetLabel() {
					name += " " + l.GetValue()
				}
				out = append(out, fmt.Sprintf("%s %.0f", name, m.GetCounter().GetValue()))
			}
		}
	}
	return strings.Join(out, ", ")
}
