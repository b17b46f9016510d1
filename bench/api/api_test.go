package api

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgesync/edgesync/bench/internal/benchdata"
	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/internal/api"
	"github.com/edgesync/edgesync/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func tables() []domain.Table {
	return []domain.Table{
		{Name: "images", MemoryType: "image", URLColumn: "url", SizeColumn: "size_bytes"},
		{Name: "videos", MemoryType: "video", URLColumn: "url", SizeColumn: "size_bytes"},
		{Name: "notes", MemoryType: "note"},
		{Name: "documents", MemoryType: "document", URLColumn: "url", SizeColumn: "size_bytes"},
		{Name: "audio", MemoryType: "audio", URLColumn: "url", SizeColumn: "size_bytes"},
	}
}

func get(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	return nil
}

func sequential(b *testing.B, c *http.Client, name string, url func() string) time.Duration {
	b.Helper()
	var ds []time.Duration
	for i := 0; i < 220; i++ {
		u := url()
		start := time.Now()
		if err := get(c, u); err != nil {
			b.Fatal(err)
		}
		if i >= 20 {
			ds = append(ds, time.Since(start))
		}
	}
	p50, p99 := benchdata.Percentiles(ds)
	b.ReportMetric(benchdata.MS(p50), "p50-ms")
	b.ReportMetric(benchdata.MS(p99), "p99-ms")
	fmt.Printf("%-48s p50 %7.3f ms  p99 %7.3f ms  (%d requests)\n", name, benchdata.MS(p50), benchdata.MS(p99), len(ds))
	return p99
}

func BenchmarkAPI(b *testing.B) {
	ctx := context.Background()
	url := pgtest.New(b)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = 16
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	d, err := benchdata.Load(ctx, pool, benchdata.Options{})
	if err != nil {
		b.Fatal(err)
	}
	fmt.Printf("dataset: %d memories, %d edges, %d galleries (one of %d items), loaded in %s\n",
		d.Memories, d.Edges, d.Galleries, d.BigGallery, d.LoadTime.Round(time.Millisecond))

	s := api.New(api.Config{Tables: tables(), AdminToken: "bench"}, api.Deps{Pool: pool})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := s.HTTPServer(ln.Addr().String())
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	base := "http://" + ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 200, MaxIdleConnsPerHost: 200}}

	rnd := rand.New(rand.NewPCG(3, 4))
	var mu sync.Mutex
	memoryURL := func() string {
		mu.Lock()
		id, typ := benchdata.MemoryID(1 + rnd.IntN(d.Memories))
		mu.Unlock()
		return base + "/api/memories/" + typ + "/" + id + "/presence"
	}
	galleryURL := func() string {
		mu.Lock()
		j := 1 + rnd.IntN(d.Galleries)
		mu.Unlock()
		return base + "/api/galleries/" + benchdata.GalleryID(j) + "/presence?limit=50"
	}

	b.Run("gallery_presence/10k_first_page", func(b *testing.B) {
		p99 := sequential(b, client, "GET gallery presence, 10k gallery, page of 50", func() string {
			return base + "/api/galleries/" + d.BigGalleryID + "/presence?limit=50"
		})
		if p99 > 10*time.Millisecond {
			fmt.Printf("  goal missed: p99 > 10 ms\n")
		}
	})
	b.Run("memory_presence", func(b *testing.B) {
		p99 := sequential(b, client, "GET memory presence", memoryURL)
		if p99 > 5*time.Millisecond {
			fmt.Printf("  goal missed: p99 > 5 ms\n")
		}
	})
	b.Run("cached/gallery_first_page_vs_healthz_concurrent_50", func(b *testing.B) { cachedGalleryVsHealthz(b, pool, d) })
	b.Run("concurrent_50", func(b *testing.B) {
		dur := 10 * time.Second
		if v := os.Getenv("BENCH_API_DURATION"); v != "" {
			if dur, err = time.ParseDuration(v); err != nil {
				b.Fatal(err)
			}
		}
		var ok, failed atomic.Int64
		var firstErr atomic.Value
		stop := time.Now().Add(dur)
		var wg sync.WaitGroup
		for w := 0; w < 50; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; time.Now().Before(stop); i++ {
					u := memoryURL()
					if i%2 == 0 {
						u = galleryURL()
					}
					if err := get(client, u); err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
						continue
					}
					ok.Add(1)
				}
			}()
		}
		start := time.Now()
		wg.Wait()
		rps := float64(ok.Load()) / time.Since(start).Seconds()
		b.ReportMetric(rps, "req/s")
		fmt.Printf("%-48s %8.0f req/s over %s (%d ok, %d failed; half gallery first pages, half memory presence)\n",
			"50 concurrent clients", rps, dur, ok.Load(), failed.Load())
		if failed.Load() > 0 {
			b.Fatalf("%d requests failed, first: %v", failed.Load(), firstErr.Load())
		}
	})
}
