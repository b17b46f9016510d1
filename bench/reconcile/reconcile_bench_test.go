package reconcilebench

import (
	"cmp"
	"context"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgesync/edgesync/bench/internal/benchdata"
	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/internal/pgtest"
	"github.com/edgesync/edgesync/reconcile"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The data set: 1,000,000 memories over the reference tables; 95% of the
// media rows have a Blob URL; 2% of memories have an icp-canister edge.
var tables = []struct {
	name, memoryType string
	rows             int
	media            bool
}{
	{"images", "image", 400_000, true},
	{"videos", "video", 150_000, true},
	{"notes", "note", 200_000, false},
	{"documents", "document", 150_000, true},
	{"audio", "audio", 100_000, true},
}

// Damage: 1% of each kind, counted in edges.
const (
	orphanEdges  = 10_000 // 5,000 images with URLs deleted behind the pipeline's back
	missingEdges = 10_000 // 5,000 video metadata edges and 5,000 document blob edges lost
	driftEdges   = 10_000 // blob edges: 4,000 wrong location, 3,000 not present, 3,000 wrong size
)

func BenchmarkReconcile_Million(b *testing.B) {
	ctx := context.Background()
	cluster := statsCluster(b)
	srcURL := cluster.NewDB(b)
	start := time.Now()
	load(b, srcURL)
	yardURL := copyDB(b, cluster, srcURL, "_yard")
	wholeURL := copyDB(b, cluster, srcURL, "_whole")
	fmt.Printf("reconcile bench: loaded 1,000,000 memories with their edges and 1%% damage of each kind, and two copies, in %s\n", time.Since(start).Round(time.Second))

	svcPool := open(b, srcURL)
	mustExec(b, svcPool, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`)
	yard := open(b, yardURL)
	whole := open(b, wholeURL)
	svc := reconcile.New(reconcile.Config{Tables: referenceTables()}, svcPool, nil, nil)

	// One untimed pass over both copies, so neither side pays for a cold cache.
	plainDetect(b, yard)
	plainDetect(b, whole)
	if _, err := svc.RunNow(ctx, reconcile.TriggerCLI, true, nil); err != nil {
		b.Fatal(err)
	}

	b.ResetTimer()
	for range b.N { // the data is damaged once; -benchtime 1x is the intended use
		t0 := time.Now()
		want := plainDetect(b, yard)
		plainDry := time.Since(t0)

		t0 = time.Now()
		dry, err := svc.RunNow(ctx, reconcile.TriggerCLI, true, nil)
		if err != nil {
			b.Fatal(err)
		}
		svcDry := time.Since(t0)
		if got := [3]int64{dry.Report.Orphans, dry.Report.Missing, dry.Report.Drift}; got != want || want != [3]int64{orphanEdges, missingEdges, driftEdges} {
			b.Fatalf("dry run found %v, the plain queries %v, the damage was %v", got, want, [3]int64{orphanEdges, missingEdges, driftEdges})
		}

		// Two ways to write the plain repair, each on its own copy: three
		// statements per memory table, or three statements over all of
		// them. The faster is the yardstick.
		logFrom := len(cluster.Log()) // the plans of the fixing statements only
		t0 = time.Now()
		fixed := plainFixPerTable(b, yard)
		perTable := time.Since(t0)
		t0 = time.Now()
		fixedWhole := plainFixWhole(b, whole)
		wholeTime := time.Since(t0)
		if fixedWhole != fixed {
			b.Fatalf("the plain statements per table fixed %d rows, over all tables %d", fixed, fixedWhole)
		}
		plainFixTime := min(perTable, wholeTime)

		mustExec(b, svcPool, `SELECT pg_stat_statements_reset()`)
		t0 = time.Now()
		run, err := svc.RunNow(ctx, reconcile.TriggerCLI, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		svcFix := time.Since(t0)
		if run.Report.Fixed != fixed || fixed != orphanEdges+missingEdges+driftEdges {
			b.Fatalf("the run fixed %d rows, the plain statements %d", run.Report.Fixed, fixed)
		}

		fmt.Printf("reconcile bench: where the fixing run's time went (pg_stat_statements, its database):\n%s", topStatements(b, svcPool))
		if os.Getenv("BENCH_RECONCILE_EXPLAIN") != "" {
			fmt.Printf("reconcile bench: plans of its slowest statements (auto_explain, analyze):\n%s", slowPlans(cluster.Log()[logFrom:], 6))
		}
		b.ReportMetric(svcFix.Seconds(), "fix-s")
		b.ReportMetric(plainFixTime.Seconds(), "plain-fix-s")
		b.ReportMetric(svcFix.Seconds()/plainFixTime.Seconds(), "fix-ratio")
		b.ReportMetric(svcDry.Seconds(), "dry-s")
		b.ReportMetric(plainDry.Seconds(), "plain-dry-s")
		b.ReportMetric(svcDry.Seconds()/plainDry.Seconds(), "dry-ratio")
		fmt.Printf("reconcile bench: plain repair: 3 statements per table %s, 3 statements over all tables %s\n", perTable.Round(time.Millisecond), wholeTime.Round(time.Millisecond))
		fmt.Printf("reconcile bench: 1,000,000 memories, %d damaged edges: fixing run %s vs plain SQL %s = %.2fx (goal <= 1.5x); dry run %s vs plain detection %s = %.2fx (goal < 3x)\n",
			fixed, svcFix.Round(time.Millisecond), plainFixTime.Round(time.Millisecond), svcFix.Seconds()/plainFixTime.Seconds(),
			svcDry.Round(time.Millisecond), plainDry.Round(time.Millisecond), svcDry.Seconds()/plainDry.Seconds())
	}
}

// statsCluster starts the benchmark's own cluster with pg_stat_statements
// (where reconcile's time goes) and, with BENCH_RECONCILE_EXPLAIN set,
// auto_explain logging the analysed plan of every statement over 100 ms.
func statsCluster(b *testing.B) *pgtest.Cluster {
	b.Helper()
	cluster := pgtest.StartCluster(b)
	setup := []string{`ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'`}
	if os.Getenv("BENCH_RECONCILE_EXPLAIN") != "" {
		setup = []string{`LOAD 'auto_explain'`, `ALTER SYSTEM SET shared_preload_libraries = pg_stat_statements, auto_explain`,
			`ALTER SYSTEM SET auto_explain.log_min_duration = '100ms'`,
			`ALTER SYSTEM SET auto_explain.log_analyze = on`,
			`ALTER SYSTEM SET auto_explain.log_buffers = on`,
			`ALTER SYSTEM SET auto_explain.log_nested_statements = on`}
	}
	benchdata.Configure(b, cluster, setup)
	return cluster
}

func mustExec(b *testing.B, p *pgxpool.Pool, sql string) {
	b.Helper()
	if _, err := p.Exec(context.Background(), sql); err != nil {
		b.Fatalf("%s: %v", sql, err)
	}
}

// topStatements lists the statements of the pool's database with the most
// execution time since the last reset.
func topStatements(b *testing.B, p *pgxpool.Pool) string {
	b.Helper()
	mustExec(b, p, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`)
	out, err := benchdata.TopStatements(context.Background(), p, 8, 140, true)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// slowPlans picks the n slowest auto_explain entries from the server log.
func slowPlans(log string, n int) string {
	type entry struct {
		ms   float64
		text string
	}
	var all []entry
	for _, e := range strings.Split(log, "LOG:  duration: ")[1:] {
		if j := strings.Index(e, "\n20"); j > 0 { // the next log line
			e = e[:j]
		}
		ms, _ := strconv.ParseFloat(strings.Fields(e)[0], 64)
		all = append(all, entry{ms, e})
	}
	slices.SortFunc(all, func(a, b entry) int { return cmp.Compare(b.ms, a.ms) })
	var out strings.Builder
	for i, e := range all {
		if i == n {
			break
		}
		out.WriteString("duration: " + e.text + "\n")
	}
	if out.Len() == 0 {
		return "(no auto_explain entry in the server log)\n"
	}
	return out.String()
}

func referenceTables() []domain.Table {
	var ts []domain.Table
	for _, t := range tables {
		rt := domain.Table{Name: t.name, MemoryType: t.memoryType}
		if t.media {
			rt.URLColumn, rt.SizeColumn = "url", "size_bytes"
		}
		ts = append(ts, rt)
	}
	return ts
}

func open(b *testing.B, u string) *pgxpool.Pool {
	b.Helper()
	p, err := pgxpool.New(context.Background(), u)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Close)
	return p
}

// load fills the database with set-based SQL: the rows, the edges the
// pipeline would have written, a few ICP syncs, then the damage.
func load(b *testing.B, u string) {
	b.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	exec := func(sql string) {
		b.Helper()
		if _, err := conn.Exec(ctx, sql); err != nil {
			b.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`SET synchronous_commit = off`)
	exec(`SET maintenance_work_mem = '256MB'`)
	// Bulk loads go faster without the secondary indexes; they are rebuilt after.
	exec(`DROP INDEX ix_edges_memory, ix_edges_backend_present, ix_edges_sync_state`)
	for _, t := range tables {
		if t.media {
			exec(fmt.Sprintf(`INSERT INTO %s (owner_id, title, url, size_bytes, mime_type)
				SELECT gen_random_uuid(), 'memory ' || g,
				       CASE WHEN g %% 20 = 0 THEN NULL ELSE 'https://store.public.blob.vercel-storage.com/%s/' || g || '-' || md5(g::text) END,
				       1000 + (g::bigint * 7919) %% 5000000, 'application/octet-stream'
				FROM generate_series(1, %d) g`, t.name, t.name, t.rows))
			exec(fmt.Sprintf(`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, location, size_bytes)
				SELECT id, '%s'::memory_type_t, 'metadata'::artifact_t, 'neon-db'::backend_t, true, NULL, NULL FROM %s
				UNION ALL
				SELECT id, '%s', 'asset', 'vercel-blob', true, url, size_bytes FROM %s WHERE url IS NOT NULL`, t.memoryType, t.name, t.memoryType, t.name))
		} else {
			exec(fmt.Sprintf(`INSERT INTO %s (owner_id, title, body) SELECT gen_random_uuid(), 'note ' || g, 'text' FROM generate_series(1, %d) g`, t.name, t.rows))
			exec(fmt.Sprintf(`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present)
				SELECT id, '%s', 'metadata', 'neon-db', true FROM %s`, t.memoryType, t.name))
		}
		exec(fmt.Sprintf(`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, content_hash, last_synced_at)
			SELECT id, '%s', 'metadata', 'icp-canister', true, md5(id::text), now() FROM %s TABLESAMPLE BERNOULLI (2) REPEATABLE (7)`, t.memoryType, t.name))
	}
	exec(`CREATE INDEX ix_edges_memory ON storage_edges (memory_id, memory_type)`)
	exec(`CREATE INDEX ix_edges_backend_present ON storage_edges (backend, artifact, present)`)
	exec(`CREATE INDEX ix_edges_sync_state ON storage_edges (sync_state)`)

	// orphans: rows deleted, their web2 edges (2 each) left behind
	exec(`DELETE FROM images WHERE id IN (SELECT id FROM images WHERE url IS NOT NULL AND id NOT IN
		(SELECT memory_id FROM storage_edges WHERE backend = 'icp-canister') ORDER BY md5(id::text) LIMIT 5000)`)
	// missing
	exec(`DELETE FROM storage_edges WHERE id IN (SELECT id FROM storage_edges WHERE memory_type = 'video' AND backend = 'neon-db' ORDER BY md5(id::text) LIMIT 5000)`)
	exec(`DELETE FROM storage_edges WHERE id IN (SELECT id FROM storage_edges WHERE memory_type = 'document' AND backend = 'vercel-blob' ORDER BY md5(id::text) LIMIT 5000)`)
	// drift
	exec(`WITH pick AS (SELECT id, row_number() OVER () AS n FROM (SELECT e.id FROM storage_edges e JOIN images m ON m.id = e.memory_id
		WHERE e.backend = 'vercel-blob' ORDER BY md5(e.id::text) LIMIT 7000) s)
		UPDATE storage_edges e SET location = CASE WHEN p.n <= 4000 THEN 'https://store.public.blob.vercel-storage.com/stale' ELSE e.location END,
		                           present = p.n <= 4000
		FROM pick p WHERE e.id = p.id`)
	exec(`UPDATE storage_edges SET size_bytes = size_bytes + 1 WHERE id IN (SELECT id FROM storage_edges WHERE memory_type = 'audio' AND backend = 'vercel-blob' ORDER BY md5(id::text) LIMIT 3000)`)
	exec(`VACUUM ANALYZE`)
}

// copyDB clones the loaded database file by file (CREATE DATABASE …
// TEMPLATE), so the yardstick starts from exactly the same data and layout.
func copyDB(b *testing.B, cl *pgtest.Cluster, src, suffix string) string {
	b.Helper()
	ctx := context.Background()
	u, err := url.Parse(src)
	if err != nil {
		b.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	admin, err := pgx.Connect(ctx, cl.URL("postgres"))
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close(ctx)
	copyName := name + suffix
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{copyName}.Sanitize()+" TEMPLATE "+pgx.Identifier{name}.Sanitize()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cl.Drop(copyName) })
	return cl.URL(copyName)
}

// drift is the rule of CONTRACT section 4 for one blob or metadata edge e
// against its row m, written out by hand.
func drift(media bool) string {
	if !media {
		return `((e.artifact = 'metadata' AND e.backend = 'neon-db' AND (NOT e.present OR e.location IS NOT NULL))
  OR (e.artifact = 'asset' AND e.backend = 'vercel-blob' AND (e.present OR e.location IS NOT NULL)))`
	}
	return `((e.artifact = 'metadata' AND e.backend = 'neon-db' AND (NOT e.present OR e.location IS NOT NULL))
  OR (e.artifact = 'asset' AND e.backend = 'vercel-blob' AND CASE WHEN m.url IS NULL THEN e.present OR e.location IS NOT NULL
      ELSE NOT (e.present AND e.location IS NOT DISTINCT FROM m.url AND e.size_bytes IS NOT DISTINCT FROM m.size_bytes) END))`
}

func plainDetect(b *testing.B, p *pgxpool.Pool) [3]int64 {
	b.Helper()
	var out [3]int64
	for _, t := range tables {
		q := func(sql string) int64 {
			var n int64
			if err := p.QueryRow(context.Background(), sql, t.memoryType).Scan(&n); err != nil {
				b.Fatalf("%s: %v", sql, err)
			}
			return n
		}
		out[0] += q(`SELECT count(*) FROM storage_edges e WHERE e.memory_type = $1::text::memory_type_t AND e.backend <> 'icp-canister'
			AND NOT EXISTS (SELECT 1 FROM ` + t.name + ` m WHERE m.id = e.memory_id)`)
		out[1] += q(`SELECT count(*) FROM ` + t.name + ` m WHERE NOT EXISTS (SELECT 1 FROM storage_edges e WHERE e.memory_id = m.id
			AND e.memory_type = $1::text::memory_type_t AND e.artifact = 'metadata' AND e.backend = 'neon-db')`)
		if t.media {
			out[1] += q(`SELECT count(*) FROM ` + t.name + ` m WHERE m.url IS NOT NULL AND NOT EXISTS (SELECT 1 FROM storage_edges e WHERE e.memory_id = m.id
				AND e.memory_type = $1::text::memory_type_t AND e.artifact = 'asset' AND e.backend = 'vercel-blob')`)
		}
		out[2] += q(`SELECT count(*) FROM storage_edges e JOIN ` + t.name + ` m ON m.id = e.memory_id
			WHERE e.memory_type = $1::text::memory_type_t AND ` + drift(t.media))
	}
	var stuck, failed int64
	_ = p.QueryRow(context.Background(), `SELECT count(*) FROM storage_edges WHERE sync_state = 'migrating' AND updated_at < now() - interval '15 minutes'`).Scan(&stuck)
	_ = p.QueryRow(context.Background(), `SELECT count(*) FROM storage_edges e JOIN sync_attempts a USING (memory_id, memory_type, backend)
		WHERE e.sync_state = 'failed' AND a.next_attempt_at <= now()`).Scan(&failed)
	return out
}

// memories is every memory row with its type, asset URL and size (NULL
// for notes), as one relation for the plain statements.
func memories() string {
	var parts []string
	for _, t := range tables {
		url, size := "NULL::text", "NULL::bigint"
		if t.media {
			url, size = "url", "size_bytes"
		}
		parts = append(parts, fmt.Sprintf("SELECT id, '%s'::memory_type_t AS typ, %s AS url, %s AS size_bytes FROM %s", t.memoryType, url, size, t.name))
	}
	return "(" + strings.Join(parts, " UNION ALL ") + ")"
}

// plainFixWhole repairs the damage with one DELETE …
// NOT EXISTS (orphans), one INSERT … NOT EXISTS (missing) and one UPDATE …
// FROM (drift), each over all memory tables at once. Neither plain variant
// looks for stuck or failed ICP syncs (reconcile does; the damage has none).
func plainFixWhole(b *testing.B, p *pgxpool.Pool) int64 {
	b.Helper()
	var n int64
	ex := func(sql string) {
		tag, err := p.Exec(context.Background(), sql)
		if err != nil {
			b.Fatalf("%s: %v", sql, err)
		}
		n += tag.RowsAffected()
	}
	mem := memories()
	ex(`DELETE FROM storage_edges e WHERE e.backend <> 'icp-canister'
		AND NOT EXISTS (SELECT 1 FROM ` + mem + ` m WHERE m.id = e.memory_id AND m.typ = e.memory_type)`)
	ex(`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, location, size_bytes)
		SELECT w.id, w.typ, w.artifact, w.backend, true, w.url, w.size_bytes FROM (
			SELECT id, typ, 'metadata'::artifact_t AS artifact, 'neon-db'::backend_t AS backend, NULL::text AS url, NULL::bigint AS size_bytes FROM ` + mem + ` m
			UNION ALL
			SELECT id, typ, 'asset', 'vercel-blob', url, size_bytes FROM ` + mem + ` m WHERE url IS NOT NULL) w
		WHERE NOT EXISTS (SELECT 1 FROM storage_edges e WHERE e.memory_id = w.id AND e.memory_type = w.typ AND e.artifact = w.artifact AND e.backend = w.backend)`)
	ex(`UPDATE storage_edges e SET present = (e.artifact = 'metadata' OR m.url IS NOT NULL),
			location = CASE WHEN e.artifact = 'metadata' THEN NULL ELSE m.url END,
			size_bytes = CASE WHEN e.artifact = 'asset' AND m.url IS NOT NULL THEN m.size_bytes ELSE e.size_bytes END
		FROM ` + mem + ` m WHERE m.id = e.memory_id AND m.typ = e.memory_type AND ` + drift(true))
	return n
}

// plainFixPerTable repairs the damage with one DELETE … NOT EXISTS, one
// INSERT … NOT EXISTS and one UPDATE … FROM per memory table.
func plainFixPerTable(b *testing.B, p *pgxpool.Pool) int64 {
	b.Helper()
	var n int64
	ex := func(sql string, args ...any) {
		tag, err := p.Exec(context.Background(), sql, args...)
		if err != nil {
			b.Fatalf("%s: %v", sql, err)
		}
		n += tag.RowsAffected()
	}
	for _, t := range tables {
		ex(`DELETE FROM storage_edges e WHERE e.memory_type = $1::text::memory_type_t AND e.backend <> 'icp-canister'
			AND NOT EXISTS (SELECT 1 FROM `+t.name+` m WHERE m.id = e.memory_id)`, t.memoryType)
		ins := `INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, location, size_bytes)
			SELECT m.id, $1::text::memory_type_t, 'metadata'::artifact_t, 'neon-db'::backend_t, true, NULL, NULL FROM ` + t.name + ` m
			WHERE NOT EXISTS (SELECT 1 FROM storage_edges e WHERE e.memory_id = m.id AND e.memory_type = $1::text::memory_type_t AND e.artifact = 'metadata' AND e.backend = 'neon-db')`
		set := `present = true, location = NULL`
		if t.media {
			set = `present = (e.artifact = 'metadata' OR m.url IS NOT NULL), location = CASE WHEN e.artifact = 'metadata' THEN NULL ELSE m.url END,
				size_bytes = CASE WHEN e.artifact = 'asset' AND m.url IS NOT NULL THEN m.size_bytes ELSE e.size_bytes END`
			ins += `
			UNION ALL
			SELECT m.id, $1::text::memory_type_t, 'asset'::artifact_t, 'vercel-blob'::backend_t, true, m.url, m.size_bytes FROM ` + t.name + ` m
			WHERE m.url IS NOT NULL AND NOT EXISTS (SELECT 1 FROM storage_edges e WHERE e.memory_id = m.id AND e.memory_type = $1::text::memory_type_t AND e.artifact = 'asset' AND e.backend = 'vercel-blob')`
		}
		ex(ins+` ON CONFLICT ON CONSTRAINT storage_edges_key DO NOTHING`, t.memoryType)
		ex(`UPDATE storage_edges e SET `+set+` FROM `+t.name+` m
			WHERE m.id = e.memory_id AND e.memory_type = $1::text::memory_type_t AND `+drift(t.media), t.memoryType)
	}
	return n
}
