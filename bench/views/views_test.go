package views

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgesync/edgesync/bench/internal/benchdata"
	"github.com/edgesync/edgesync/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const lookups = 200

// measure runs q lookups times with args from next and reports p50/p99.
func measure(b *testing.B, pool *pgxpool.Pool, name, q string, next func(i int) []any) (p50, p99 time.Duration) {
	b.Helper()
	ctx := context.Background()
	ds := make([]time.Duration, 0, lookups)
	for i := 0; i < lookups+20; i++ {
		args := next(i)
		start := time.Now()
		rows, err := pool.Query(ctx, q, args...)
		if err != nil {
			b.Fatal(err)
		}
		for rows.Next() {
		}
		if err := rows.Err(); err != nil {
			b.Fatal(err)
		}
		if i >= 20 { // the first ones warm the cache and the statement cache
			ds = append(ds, time.Since(start))
		}
	}
	p50, p99 = benchdata.Percentiles(ds)
	b.ReportMetric(benchdata.MS(p50), "p50-ms")
	b.ReportMetric(benchdata.MS(p99), "p99-ms")
	fmt.Printf("%-44s p50 %7.3f ms  p99 %7.3f ms  (%d lookups)\n", name, benchdata.MS(p50), benchdata.MS(p99), lookups)
	return p50, p99
}

// plan returns the EXPLAIN text of q with literal arguments.
func plan(b *testing.B, pool *pgxpool.Pool, q string) string {
	b.Helper()
	rows, err := pool.Query(context.Background(), "EXPLAIN "+q)
	if err != nil {
		b.Fatal(err)
	}
	var lines []string
	for rows.Next() {
		var l string
		_ = rows.Scan(&l)
		lines = append(lines, l)
	}
	return strings.Join(lines, "\n")
}

func BenchmarkViews(b *testing.B) {
	ctx := context.Background()
	pool := pgtest.Pool(b, pgtest.New(b))
	d, err := benchdata.Load(ctx, pool, benchdata.Options{})
	if err != nil {
		b.Fatal(err)
	}
	fmt.Printf("dataset: %d memories, %d edges, %d galleries (one of %d items), loaded in %s\n",
		d.Memories, d.Edges, d.Galleries, d.BigGallery, d.LoadTime.Round(time.Millisecond))
	rnd := rand.New(rand.NewPCG(1, 2))
	memory := func(int) []any {
		id, typ := benchdata.MemoryID(1 + rnd.IntN(d.Memories))
		return []any{id, typ}
	}

	b.Run("memory_presence/one", func(b *testing.B) {
		id, typ := benchdata.MemoryID(12345)
		p := plan(b, pool, fmt.Sprintf(`SELECT * FROM memory_presence WHERE memory_id = '%s' AND memory_type = '%s'`, id, typ))
		if strings.Contains(p, "Seq Scan on storage_edges") {
			b.Fatalf("memory_presence lookup scans storage_edges:\n%s", p)
		}
		measure(b, pool, "memory_presence, one memory", `SELECT * FROM memory_presence WHERE memory_id = $1 AND memory_type = $2`, memory)
	})

	b.Run("gallery_presence/10k_live", func(b *testing.B) {
		p := plan(b, pool, fmt.Sprintf(`SELECT * FROM gallery_presence WHERE gallery_id = '%s'`, d.BigGalleryID))
		if strings.Contains(p, "Seq Scan on storage_edges") || strings.Contains(p, "Seq Scan on gallery_items") {
			b.Fatalf("gallery_presence lookup scans a table:\n%s", p)
		}
		measure(b, pool, "gallery_presence (view), 10k-item gallery", `SELECT * FROM gallery_presence WHERE gallery_id = $1`,
			func(int) []any { return []any{d.BigGalleryID} })
	})

	b.Run("gallery_presence/100_live", func(b *testing.B) {
		measure(b, pool, "gallery_presence (view), 100-item gallery", `SELECT * FROM gallery_presence WHERE gallery_id = $1`,
			func(int) []any { return []any{benchdata.GalleryID(2 + rnd.IntN(d.Galleries-1))} })
	})

	b.Run("gallery_presence_mv/refresh", func(b *testing.B) {
		start := time.Now()
		if _, err := pool.Exec(ctx, `SELECT refresh_gallery_presence()`); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		b.ReportMetric(benchdata.MS(took), "refresh-ms")
		fmt.Printf("%-44s %7.1f ms\n", "gallery_presence_mv refresh (concurrently)", benchdata.MS(took))
	})

	b.Run("gallery_presence_mv/10k_lookup", func(b *testing.B) {
		p := plan(b, pool, fmt.Sprintf(`SELECT * FROM gallery_presence_mv WHERE gallery_id = '%s'`, d.BigGalleryID))
		if !strings.Contains(p, "ux_gallery_presence_mv_gallery") {
			b.Fatalf("MV lookup does not use its unique index:\n%s", p)
		}
		_, p99 := measure(b, pool, "gallery_presence_mv, 10k-item gallery", `SELECT * FROM gallery_presence_mv WHERE gallery_id = $1`,
			func(int) []any { return []any{d.BigGalleryID} })
		if p99 > 5*time.Millisecond {
			fmt.Printf("  goal missed: p99 %.3f ms > 5 ms\n", benchdata.MS(p99))
		}
	})

	b.Run("gallery_presence_mv/any_lookup", func(b *testing.B) {
		measure(b, pool, "gallery_presence_mv, random gallery", `SELECT * FROM gallery_presence_mv WHERE gallery_id = $1`,
			func(int) []any { return []any{benchdata.GalleryID(1 + rnd.IntN(d.Galleries))} })
	})

	b.Run("galleries_of_memory", func(b *testing.B) {
		// What the gallery status tracker asks for each changed memory.
		id, typ := benchdata.MemoryID(777)
		p := plan(b, pool, fmt.Sprintf(`SELECT gallery_id FROM gallery_items WHERE memory_id = '%s' AND memory_type = '%s'`, id, typ))
		if strings.Contains(p, "Seq Scan") {
			b.Fatalf("galleries-of-memory lookup scans:\n%s", p)
		}
		measure(b, pool, "gallery_items by memory", `SELECT gallery_id FROM gallery_items WHERE memory_id = $1 AND memory_type = $2`, memory)
	})
}
