// Package benchdata loads the benchmark dataset shared by bench/views and
// bench/api: N memories spread over the five reference app tables, their
// edges (web2 for all, ICP for some, a few migrating or failed), and G
// galleries, one of which holds BigGallery items. Everything is set-based
// SQL (generate_series), and ids are derived from md5 of a counter, so the
// same options always build the same data.
//
// It imports pgx and the standard library only (ProcCPU and BuildEdgesync
// for the benchmarks that run the daemon as a process); benchmarks only.
package benchdata

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/edgesync/edgesync/domain"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Options size the dataset.
type Options struct {
	Memories     int // default 1,000,000
	Galleries    int // default 1,000
	BigGallery   int // items of the first gallery; default 10,000
	GalleryItems int // items of every other gallery; default 100
}

// Dataset names what a benchmark looks up.
type Dataset struct {
	Options
	BigGalleryID string
	Edges        int64
	LoadTime     time.Duration
}

// Types are the memory types in the order MemoryAt cycles through them.
var Types = domain.MemoryTypes()

var tables = []string{"images", "videos", "notes", "documents", "audio"}

// MemoryID returns the id of memory i (1-based) as the loader made it, and
// its type.
func MemoryID(i int) (id, typ string) {
	return md5UUID(fmt.Sprintf("m%d", i)), Types[i%5]
}

// GalleryID returns the id of gallery j (1 = the big one).
func GalleryID(j int) string { return md5UUID(fmt.Sprintf("g%d", j)) }

// md5UUID is Postgres's md5(s)::uuid.
func md5UUID(s string) string {
	h := md5.Sum([]byte(s))
	x := hex.EncodeToString(h[:])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

// Load fills an empty, migrated database.
func Load(ctx context.Context, pool *pgxpool.Pool, o Options) (Dataset, error) {
	if o.Memories == 0 {
		o.Memories = 1_000_000
		// BENCH_MEMORIES shrinks the dataset for a quick run.
		if n, err := strconv.Atoi(os.Getenv("BENCH_MEMORIES")); err == nil && n >= 20_000 {
			o.Memories = n
		}
	}
	if o.Galleries == 0 {
		o.Galleries = 1_000
	}
	if o.BigGallery == 0 {
		o.BigGallery = 10_000
	}
	if o.GalleryItems == 0 {
		o.GalleryItems = 100
	}
	start := time.Now()
	n := o.Memories
	var steps []string
	// Memory i has type Types[i%5] and lives in tables[i%5]; 1 in 10 asset
	// memories has no asset URL.
	for k, t := range tables {
		first := k
		if first == 0 {
			first = 5
		}
		if t == "notes" {
			steps = append(steps, fmt.Sprintf(`INSERT INTO notes (id, owner_id, title, body)
				SELECT md5('m'||i)::uuid, md5('o'||(i %% 1000))::uuid, 'note '||i, 'body'
				FROM generate_series(%d, %d, 5) i`, first, n))
			continue
		}
		steps = append(steps, fmt.Sprintf(`INSERT INTO %s (id, owner_id, title, url, size_bytes, mime_type)
			SELECT md5('m'||i)::uuid, md5('o'||(i %% 1000))::uuid, 'memory '||i,
			       CASE WHEN i %% 10 = 3 THEN NULL ELSE 'https://blob.example/'||i END, 1000 + i, 'application/octet-stream'
			FROM generate_series(%d, %d, 5) i`, t, first, n))
	}
	typ := `(ARRAY['image','video','note','document','audio'])[i % 5 + 1]::memory_type_t`
	steps = append(steps,
		// Metadata in Neon for every memory.
		fmt.Sprintf(`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, location)
			SELECT md5('m'||i)::uuid, %s, 'metadata', 'neon-db', true, NULL FROM generate_series(1, %d) i`, typ, n),
		// The asset in Blob where the URL is set.
		fmt.Sprintf(`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, location, size_bytes)
			SELECT md5('m'||i)::uuid, %s, 'asset', 'vercel-blob', true, 'https://blob.example/'||i, 1000 + i
			FROM generate_series(1, %d) i WHERE i %% 5 <> 2 AND i %% 10 <> 3`, typ, n),
		// ICP: metadata for 30%% (a few migrating or failed), the asset for
		// 20%% of the asset memories.
		fmt.Sprintf(`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, sync_state, sync_error, content_hash)
			SELECT md5('m'||i)::uuid, %s, 'metadata', 'icp-canister',
			       i %% 100 NOT IN (7, 9),
			       (CASE i %% 100 WHEN 7 THEN 'migrating' WHEN 9 THEN 'failed' ELSE 'idle' END)::sync_t,
			       CASE WHEN i %% 100 = 9 THEN 'canister rejected the call' END,
			       md5('h'||i) || md5('h'||i)
			FROM generate_series(1, %d) i WHERE i %% 10 < 3`, typ, n),
		fmt.Sprintf(`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, content_hash, size_bytes)
			SELECT md5('m'||i)::uuid, %s, 'asset', 'icp-canister', true, md5('a'||i) || md5('a'||i), 1000 + i
			FROM generate_series(1, %d) i WHERE i %% 10 < 2 AND i %% 5 <> 2`, typ, n),
		fmt.Sprintf(`INSERT INTO galleries (id, owner_id, title)
			SELECT md5('g'||j)::uuid, md5('o'||j)::uuid, 'gallery '||j FROM generate_series(1, %d) j`, o.Galleries),
		// The big gallery holds memories 1..BigGallery.
		fmt.Sprintf(`INSERT INTO gallery_items (gallery_id, memory_id, memory_type, position)
			SELECT md5('g1')::uuid, md5('m'||i)::uuid, %s, i FROM generate_series(1, %d) i`, typ, o.BigGallery),
		// The others hold scattered memories.
		fmt.Sprintf(`INSERT INTO gallery_items (gallery_id, memory_id, memory_type, position)
			SELECT md5('g'||j)::uuid, md5('m'||i)::uuid, %s, k
			FROM generate_series(2, %d) j, generate_series(1, %d) k,
			     LATERAL (SELECT ((j::bigint * 7919 + k::bigint * 104729) %% %d) + 1 AS i) x
			ON CONFLICT DO NOTHING`, typ, o.Galleries, o.GalleryItems, n),
		`ANALYZE`,
		`SELECT refresh_gallery_presence()`,
		`INSERT INTO edgesync_mv_refresh (name, refreshed_at, duration_ms) VALUES ('gallery_presence_mv', now(), 0)
			ON CONFLICT (name) DO UPDATE SET refreshed_at = now()`,
	)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return Dataset{}, err
	}
	defer conn.Release()
	// A benchmark database: losing it in a crash costs nothing.
	if _, err := conn.Exec(ctx, `SET synchronous_commit = off; SET maintenance_work_mem = '256MB'; SET work_mem = '64MB'`); err != nil {
		return Dataset{}, err
	}
	for _, s := range steps {
		if _, err := conn.Exec(ctx, s); err != nil {
			return Dataset{}, fmt.Errorf("load: %w\n%s", err, s)
		}
	}
	d := Dataset{Options: o}
	if err := conn.QueryRow(ctx, `SELECT md5('g1')::uuid::text, (SELECT count(*) FROM storage_edges)`).Scan(&d.BigGalleryID, &d.Edges); err != nil {
		return Dataset{}, err
	}
	d.LoadTime = time.Since(start)
	return d, nil
}

// Percentiles returns the p50 and p99 of durations (sorted in place).
func Percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	slices.Sort(ds)
	return ds[len(ds)*50/100], ds[min(len(ds)*99/100, len(ds)-1)]
}

// MS formats a duration in milliseconds.
func MS(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
