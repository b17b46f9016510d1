package pipeline

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zapcore"

	"github.com/edgesync/edgesync/bench/internal/benchdata"
	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/daemon"
	"github.com/edgesync/edgesync/internal/natstest"
	"github.com/edgesync/edgesync/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Lines the daemon subprocess prints on stdout for the benchmark.
const (
	markStarted  = "EDGESYNC_BENCH_STARTED" // the process is up (before daemon.New), unix ns follows
	markProfiled = "EDGESYNC_BENCH_PROFILE_WRITTEN"
)

// The test binary doubles as the daemon: with EDGESYNC_BENCH_SUBPROCESS=daemon
// it runs `edgesync run` from the environment instead of the benchmarks, and
// with EDGESYNC_BENCH_CPUPROFILE it profiles itself until SIGUSR1 (or exit).
func init() {
	if os.Getenv("EDGESYNC_BENCH_SUBPROCESS") != "daemon" {
		return
	}
	os.Exit(runDaemon())
}

func runDaemon() int {
	fmt.Printf("%s %d\n", markStarted, time.Now().UnixNano())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	stopProfile := func() {}
	if path := os.Getenv("EDGESYNC_BENCH_CPUPROFILE"); path != "" {
		// SIGUSR1 ends the profile in progress; SIGUSR2 starts the next one
		// (path.2, path.3, ...).
		var mu sync.Mutex
		var cur *os.File
		start := func(p string) error {
			f, err := os.Create(p)
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				f.Close()
				return err
			}
			cur = f
			return nil
		}
		stopProfile = func() {
			mu.Lock()
			defer mu.Unlock()
			if cur != nil {
				pprof.StopCPUProfile()
				cur.Close()
				cur = nil
				fmt.Println(markProfiled)
			}
		}
		if err := start(path); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		sigs := make(chan os.Signal, 2)
		signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
		go func() {
			n := 1
			for sig := range sigs {
				if sig == syscall.SIGUSR1 {
					stopProfile()
					continue
				}
				n++
				mu.Lock()
				if cur == nil {
					_ = start(fmt.Sprintf("%s.%d", path, n))
				}
				mu.Unlock()
			}
		}()
	}
	defer stopProfile()
	cfg, err := config.Load("", os.LookupEnv)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	log, _ := daemon.NewLogger(cfg, zapcore.Lock(os.Stderr))
	d, err := daemon.New(ctx, cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := d.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// The fixed workload: 100,000 source changes in transactions of 100.
//
//	600 insert transactions: 450 of 100 images (all with a Blob URL), 150 of
//	    100 notes, interleaved 3:1 (60,000 inserts)
//	200 update transactions: images 1..20,000 get a new URL (every tenth:
//	    NULL, the Blob URL was cleared) (20,000 updates)
//	200 delete transactions: images 20,001..34,000, notes 1..6,000
//	    (20,000 deletes)
//
// Updates and deletes touch memories inserted more than 2,000 changes
// earlier (the edge writer's largest batch), and no memory is both updated
// and deleted, so no two changes of one memory are collapsed into one write
// and the edge events are known exactly.
const (
	nImages      = 45_000
	nNotes       = 15_000
	nUpdated     = 20_000 // images 1..nUpdated
	delImageFrom = 20_001
	delImageTo   = 34_000
	nDelNotes    = 6_000
	txnSize      = 100
	changes      = nImages + nNotes + nUpdated + (delImageTo - delImageFrom + 1) + nDelNotes
)

// expected is the stream content the workload must produce, per subject.
func expected() map[string]uint64 {
	delImages := uint64(delImageTo - delImageFrom + 1)
	return map[string]uint64{
		"edgesync.memory.image.created":     nImages,
		"edgesync.memory.note.created":      nNotes,
		"edgesync.memory.image.updated":     nUpdated,
		"edgesync.memory.image.deleted":     delImages,
		"edgesync.memory.note.deleted":      nDelNotes,
		"edgesync.edge.neon-db.created":     nImages + nNotes,      // metadata edges
		"edgesync.edge.vercel-blob.created": nImages,               // asset edges
		"edgesync.edge.vercel-blob.updated": nUpdated,              // new location, or not present
		"edgesync.edge.neon-db.deleted":     delImages + nDelNotes, // metadata edges
		"edgesync.edge.vercel-blob.deleted": delImages,             // asset edges
	}
}

func sum(m map[string]uint64) (n uint64) {
	for _, v := range m {
		n += v
	}
	return n
}

// srcDDL holds the workload's source rows, unlogged and unpublished: the load
// and the set-based yardstick both read them.
const srcDDL = `
CREATE UNLOGGED TABLE bench_src (
    kind    text    NOT NULL,
    n       int     NOT NULL,
    id      uuid    NOT NULL,
    url     text,
    size    bigint,
    new_url text,
    upd     boolean NOT NULL,
    del     boolean NOT NULL,
    PRIMARY KEY (kind, n)
);
INSERT INTO bench_src
SELECT 'image', g, md5('bench-image-' || g)::uuid, 'https://blob.example/i/' || g || '.jpg', 1000 + g,
       CASE WHEN g % 10 = 0 THEN NULL ELSE 'https://blob.example/i/' || g || '-v2.jpg' END,
       g <= 20000, g BETWEEN 20001 AND 34000
FROM generate_series(1, 45000) g;
INSERT INTO bench_src
SELECT 'note', g, md5('bench-note-' || g)::uuid, NULL, NULL, NULL, false, g <= 6000
FROM generate_series(1, 15000) g;
ANALYZE bench_src;`

const (
	insImages = `INSERT INTO images (id, owner_id, title, url, size_bytes, mime_type)
SELECT id, md5('owner')::uuid, 'image ' || n, url, size, 'image/jpeg' FROM bench_src WHERE kind = 'image' AND n BETWEEN $1 AND $2 ORDER BY n`
	insNotes = `INSERT INTO notes (id, owner_id, title, body)
SELECT id, md5('owner')::uuid, 'note ' || n, 'a note of the pipeline benchmark' FROM bench_src WHERE kind = 'note' AND n BETWEEN $1 AND $2 ORDER BY n`
	updImages = `UPDATE images i SET url = s.new_url, title = 'image ' || s.n || ' v2', updated_at = now()
FROM bench_src s WHERE s.kind = 'image' AND s.n BETWEEN $1 AND $2 AND i.id = s.id`
	delImages = `DELETE FROM images i USING bench_src s WHERE s.kind = 'image' AND s.n BETWEEN $1 AND $2 AND i.id = s.id`
	delNotes  = `DELETE FROM notes i USING bench_src s WHERE s.kind = 'note' AND s.n BETWEEN $1 AND $2 AND i.id = s.id`
)

// edgesDiff counts edges the rule wants that storage_edges lacks, and edges
// it has that the rule does not want. Every image of the workload had a Blob
// URL, so every image has an asset edge: present with the URL, or not present
// where the URL was cleared.
const edgesDiff = `
WITH want AS (
    SELECT id AS memory_id, 'image'::memory_type_t AS memory_type, 'metadata'::artifact_t AS artifact,
           'neon-db'::backend_t AS backend, true AS present, NULL::text AS location, NULL::bigint AS size_bytes FROM images
    UNION ALL SELECT id, 'note', 'metadata', 'neon-db', true, NULL, NULL FROM notes
    UNION ALL SELECT id, 'image', 'asset', 'vercel-blob', url IS NOT NULL, url, size_bytes FROM images
), have AS (
    SELECT memory_id, memory_type, artifact, backend, present, location, size_bytes FROM storage_edges
)
SELECT (SELECT count(*) FROM (TABLE want EXCEPT ALL TABLE have) m), (SELECT count(*) FROM (TABLE have EXCEPT ALL TABLE want) x)`

func BenchmarkPipeline(b *testing.B) {
	for range b.N { // one run is the measurement; -benchtime 1x is the intended use
		runPipeline(b)
	}
}

func runPipeline(b *testing.B) {
	ctx := context.Background()
	t0 := time.Now()
	cluster := pgtest.StartCluster(b)
	// pg_stat_statements says where the server's time goes during the run.
	explain := os.Getenv("BENCH_PIPELINE_EXPLAIN") != ""
	setup := []string{`ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'`}
	if explain {
		// The plans of the slow statements go to the server log.
		setup = []string{`LOAD 'auto_explain'`,
			`ALTER SYSTEM SET shared_preload_libraries = pg_stat_statements, auto_explain`,
			`ALTER SYSTEM SET auto_explain.log_min_duration = '250ms'`,
			`ALTER SYSTEM SET auto_explain.log_analyze = on`,
			`ALTER SYSTEM SET auto_explain.log_timing = off`,
			`ALTER SYSTEM SET log_min_messages = 'log'`}
	}
	benchdata.Configure(b, cluster, setup)
	dbURL := cluster.NewDB(b)
	pool := pgtest.Pool(b, dbURL)
	mustExec(b, pool, `CREATE EXTENSION pg_stat_statements`)
	mustExec(b, pool, srcDDL)
	// What the daemon would create, before the slot, so that the slot is the
	// daemon's and it streams from the slot's start without a snapshot. The
	// decode yardstick's slot is a copy made at the same point.
	mustExec(b, pool, `CREATE PUBLICATION edgesync FOR TABLE images, videos, notes, documents, audio, gallery_items, storage_edges`)
	mustExec(b, pool, `INSERT INTO edgesync_pipeline_state (slot, snapshot_state) VALUES ('edgesync', 'done')`)
	mustExec(b, pool, `SELECT pg_create_logical_replication_slot('edgesync', 'pgoutput')`)
	mustExec(b, pool, `SELECT pg_copy_logical_replication_slot('edgesync', 'bench_decode')`)
	var slotStart string
	mustScan(b, pool, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'edgesync'`, &slotStart)

	// 1. The load.
	loadStart := time.Now()
	load(b, pool)
	var end string
	mustScan(b, pool, `SELECT pg_current_wal_lsn()::text`, &end)
	var walBytes int64
	mustScan(b, pool, `SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::bigint`, &walBytes, end, slotStart)
	fmt.Printf("pipeline bench: loaded %d changes in %d transactions in %s (WAL %s .. %s, %.1f MiB; setup %s)\n",
		changes, changes/txnSize, time.Since(loadStart).Round(time.Millisecond), slotStart, end, float64(walBytes)/(1<<20),
		loadStart.Sub(t0).Round(time.Millisecond))
	mustExec(b, pool, `CHECKPOINT`)

	// 2. edgesync doing its whole job on that WAL.
	ns := natstest.Start(b)
	nc := ns.Conn(b)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	// The CPU profile needs the test binary as the daemon (it profiles
	// itself); without it the daemon is the real binary, whose RSS is the
	// one that counts.
	profPath := os.Getenv("BENCH_CPUPROFILE")
	pgCPU := pgCPUMeter(b, pool)
	mustExec(b, pool, `SELECT pg_stat_statements_reset()`)
	procs0 := pgProcs(b, pool)
	waits := sampleWaits(b, dbURL)
	d := startDaemon(b, dbURL, ns.URL(), profPath)
	want := expected()
	wantTotal := sum(want)
	pgCPU0, benchCPU0 := pgCPU(), selfCPU()
	var stream jetstream.Stream
	// The job is done when every event is acked by JetStream, every edge is
	// applied, and the slot is confirmed past the load and past the
	// daemon's own edge writes (the WAL end once every event was stored).
	var tAcked, tApplied, tConfirmedLoad, tConfirmedAll time.Time
	var afterOwn string
	var got map[string]uint64
	deadline := time.Now().Add(10 * time.Minute)
	for tConfirmedAll.IsZero() {
		if time.Now().After(deadline) {
			b.Fatalf("edgesync did not finish within 10 minutes: stream %v (want %v), applied %v, confirmed past the load %v, past its own writes (%s) %v\n%s",
				got, want, !tApplied.IsZero(), !tConfirmedLoad.IsZero(), afterOwn, !tConfirmedAll.IsZero(), d.logTail())
		}
		if err := d.exited(); err != nil {
			b.Fatalf("the daemon exited: %v\n%s", err, d.logTail())
		}
		if tAcked.IsZero() {
			if stream == nil {
				stream, _ = js.Stream(ctx, "EDGESYNC")
			}
			if stream != nil {
				got = subjectCounts(b, stream)
				if n := sum(got); n >= wantTotal {
					tAcked = time.Now()
					// Every edge event is in the stream, so every edge write
					// it came from is committed: the WAL end now is past the
					// daemon's own writes. Read before the bench's own check
					// (after the clock), whose full read of storage_edges prunes pages
					// and so writes WAL the slot would have to pass too.
					mustScan(b, pool, `SELECT pg_current_wal_lsn()::text`, &afterOwn)
				}
			}
		}
		if tConfirmedLoad.IsZero() {
			var ok bool
			mustScan(b, pool, `SELECT coalesce(confirmed_flush_lsn >= $1::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = 'edgesync'`, &ok, end)
			if ok {
				tConfirmedLoad = time.Now()
			}
		}
		if !tAcked.IsZero() && !tConfirmedLoad.IsZero() {
			var ok bool
			mustScan(b, pool, `SELECT coalesce(confirmed_flush_lsn >= $1::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = 'edgesync'`, &ok, afterOwn)
			if ok {
				tConfirmedAll = time.Now()
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Every edge applied: each edge event comes from a committed edge write,
	// so with all of them stored the writes were done by tAcked. The
	// comparison with the rule (a full read of storage_edges, 0.3 s) checks
	// it after the clock, so its own time and WAL are not edgesync's; should
	// it not hold yet, the job ends when it does.
	tApplied = tAcked
	for {
		var missing, extra int64
		mustScan2(b, pool, edgesDiff, &missing, &extra)
		if missing == 0 && extra == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("storage_edges differs from the rule: %d missing, %d unexpected\n%s", missing, extra, d.logTail())
		}
		tApplied = time.Now()
		time.Sleep(10 * time.Millisecond)
	}
	if tApplied.After(tConfirmedAll) {
		tConfirmedAll = tApplied
	}
	daemonCPU := d.cpu()
	stepPGCPU, stepBenchCPU := pgCPU()-pgCPU0, selfCPU()-benchCPU0
	pgBreakdown := pgProcs(b, pool).since(procs0)
	statements := topStatements(b, pool)
	waitProfile := waits()
	var analyzed string
	mustScan(b, pool, `SELECT coalesce(last_autoanalyze::text, 'never') || ', ' || n_mod_since_analyze || ' rows changed since'
		FROM pg_stat_user_tables WHERE relname = 'storage_edges'`, &analyzed)
	d.stopProfile()
	started := d.startedAt()
	edgesync := tConfirmedAll.Sub(started)
	for s, n := range want {
		if got[s] != n {
			b.Fatalf("stream has %d messages on %s, want %d (all: %v)", got[s], s, n, got)
		}
	}
	if sum(got) != wantTotal {
		b.Fatalf("stream has %d messages, want %d: %v", sum(got), wantTotal, got)
	}
	since := func(t time.Time) float64 { return t.Sub(started).Seconds() }
	fmt.Printf("pipeline bench: edgesync whole job:  %8.3f s  %9.0f changes/s, %.0f events/s  (%s; process start %s, setup to streaming %s; all %d events acked at +%.3f s, edges applied by +%.3f s, slot confirmed past the load (%s) at +%.3f s and past its own edge writes (%s) at +%.3f s)\n",
		edgesync.Seconds(), changes/edgesync.Seconds(), float64(wantTotal)/edgesync.Seconds(), d.kind,
		started.Sub(d.spawned).Round(time.Millisecond), d.streamingAt().Sub(started).Round(time.Millisecond),
		wantTotal, since(tAcked), since(tApplied), end, since(tConfirmedLoad), afterOwn, since(tConfirmedAll))
	fmt.Printf("pipeline bench: CPU during it: daemon %.2f s, Postgres (all processes) %.2f s, bench process (NATS server + polling) %.2f s; wall %.2f s on %d CPUs\n",
		daemonCPU.Seconds(), stepPGCPU.Seconds(), stepBenchCPU.Seconds(), edgesync.Seconds(), runtime.NumCPU())
	fmt.Printf("pipeline bench: Postgres CPU by process during it: %s\n", pgBreakdown)
	fmt.Printf("pipeline bench: top statements during it (pg_stat_statements):\n%s", statements)
	fmt.Printf("pipeline bench: storage_edges last auto-analyzed: %s\n", analyzed)
	fmt.Printf("pipeline bench: what the daemon's Postgres sessions were doing:\n%s", waitProfile)
	if explain {
		fmt.Printf("pipeline bench: plan of a slow edge write (auto_explain):\n%s\n", slowPlan(cluster.Log()))
	}
	top := d.profileTop(b)

	// What edgesync published, for the publisher yardstick: every message is
	// read back once (which also proves every Nats-Msg-Id is unique).
	pub := streamStats(b, js, "EDGESYNC", wantTotal)
	fmt.Printf("pipeline bench: edgesync published %d messages, mean %d bytes of body and %d of headers (Nats-Msg-Id unique: %d ids)\n",
		pub.n, pub.meanData, pub.meanHeader, pub.ids)

	// 3. Latency at a steady 2,000 changes/s, with the same daemon caught up.
	mustExec(b, pool, `SELECT pg_stat_statements_reset()`)
	procs1, pgCPU1, benchCPU1, daemonCPU1 := pgProcs(b, pool), pgCPU(), selfCPU(), d.cpu()
	waits = sampleWaits(b, dbURL)
	d.nextProfile()
	lat := latency(b, pool, js, d)
	d.stopProfile()
	waitProfile = waits()
	fmt.Printf("pipeline bench: CPU during the latency phase: daemon %.2f s, Postgres %.2f s (%s), bench process (NATS server + writer + consumer) %.2f s; wall %.1f s\n",
		(d.cpu() - daemonCPU1).Seconds(), (pgCPU() - pgCPU1).Seconds(), pgProcs(b, pool).since(procs1), (selfCPU() - benchCPU1).Seconds(), lat.total.Seconds())
	fmt.Printf("pipeline bench: top statements during the latency phase:\n%s", topStatements(b, pool))
	fmt.Printf("pipeline bench: the daemon's Postgres sessions during the latency phase:\n%s", waitProfile)
	if profPath != "" {
		fmt.Printf("pipeline bench: CPU profile of the daemon during the latency phase: %s.2\n%s", profPath, pprofTop(profPath+".2", "-top", "-cum", "-nodecount=45"))
	}
	var missing, extra int64
	mustScan2(b, pool, edgesDiff, &missing, &extra)
	if missing != 0 || extra != 0 {
		fmt.Printf("pipeline bench: WARNING: after the latency phase storage_edges differs from the rule: %d missing, %d unexpected\n", missing, extra)
	}
	peak, rss := d.memory()
	d.stop(b)

	// 4. The three plain parts side by side, on the same WAL and data:
	// pg_recvlogical of the load from the slot copied at the daemon's start,
	// the same edge writes as set-based SQL into a scratch copy of
	// storage_edges, and a minimal async JetStream publisher sending as many
	// messages of the mean size to a scratch stream.
	plain := plainParts(b, pool, pgCPU, dbURL, end, ns, pub)

	// 5. Results.
	ratio := plain.wall.Seconds() / edgesync.Seconds()
	rows := [][3]string{
		{"edgesync whole job: 100,000 changes, " + strconv.FormatUint(wantTotal, 10) + " events acked, edges applied, slot confirmed", fmt.Sprintf("%.3f s (%.0f changes/s)", edgesync.Seconds(), changes/edgesync.Seconds()), ""},
		{"  plain: pg_recvlogical of the same WAL to /dev/null", fmt.Sprintf("%.3f s", plain.decode.Seconds()), ""},
		{fmt.Sprintf("  plain: %d edge rows as set-based SQL (scratch table)", plain.sqlRows), fmt.Sprintf("%.3f s", plain.sql.Seconds()), ""},
		{fmt.Sprintf("  plain: %d async JetStream publishes of %d+%d bytes", plain.published, pub.meanData, pub.meanHeader), fmt.Sprintf("%.3f s", plain.publish.Seconds()), ""},
		{"  plain: the three side by side (wall)", fmt.Sprintf("%.3f s", plain.wall.Seconds()), ""},
		{"ratio = plain side by side / edgesync", fmt.Sprintf("%.2f", ratio), ">= 0.7"},
		{fmt.Sprintf("commit -> JetStream ack (stored), memory events, p50 / p99 (%.0f changes/s)", lat.rate), fmt.Sprintf("%.2f / %.2f ms", benchdata.MS(lat.ackP50), benchdata.MS(lat.ackP99)), "p99 <= 25 ms"},
		{"commit -> delivered to a consumer, p50 / p99 (max)", fmt.Sprintf("%.2f / %.2f ms (%.1f)", benchdata.MS(lat.p50), benchdata.MS(lat.p99), benchdata.MS(lat.max)), ""},
		{"memory commit -> its metadata edge event delivered, p50 / p99", fmt.Sprintf("%.2f / %.2f ms", benchdata.MS(lat.edgeP50), benchdata.MS(lat.edgeP99)), ""},
		{"daemon peak RSS (VmHWM of the " + d.kind + ")", fmt.Sprintf("%.1f MiB (%.1f at the end)", mib(peak), mib(rss)), "<= 64 MiB"},
	}
	fmt.Printf("pipeline bench: RESULT\n%s", table(rows))
	if profPath != "" {
		fmt.Printf("pipeline bench: CPU profile of the daemon during the catch-up: %s (go tool pprof -top %s)\n%s", profPath, profPath, top)
	}

	b.ReportMetric(edgesync.Seconds(), "edgesync-s")
	b.ReportMetric(plain.wall.Seconds(), "plain-s")
	b.ReportMetric(plain.decode.Seconds(), "decode-s")
	b.ReportMetric(plain.sql.Seconds(), "sql-s")
	b.ReportMetric(plain.publish.Seconds(), "publish-s")
	b.ReportMetric(ratio, "ratio")
	b.ReportMetric(changes/edgesync.Seconds(), "changes/s")
	b.ReportMetric(benchdata.MS(lat.ackP99), "ack-p99-ms")
	b.ReportMetric(benchdata.MS(lat.p99), "p99-ms")
	b.ReportMetric(mib(peak), "peak-rss-MiB")
}

// table formats rows of (what, measured, goal) as aligned columns.
func table(rows [][3]string) string {
	w := [3]int{len("measurement"), len("measured"), len("goal")}
	for _, r := range rows {
		for i, c := range r {
			w[i] = max(w[i], utf8.RuneCountInString(c))
		}
	}
	var out strings.Builder
	line := func(r [3]string) {
		fmt.Fprintf(&out, "    | %s | %s | %s |\n", pad(r[0], w[0]), pad(r[1], w[1]), pad(r[2], w[2]))
	}
	line([3]string{"measurement", "measured", "goal"})
	line([3]string{strings.Repeat("-", w[0]), strings.Repeat("-", w[1]), strings.Repeat("-", w[2])})
	for _, r := range rows {
		line(r)
	}
	return out.String()
}

func pad(s string, n int) string { return s + strings.Repeat(" ", max(0, n-utf8.RuneCountInString(s))) }

func mib(kb int64) float64 { return float64(kb) / 1024 }

func mustExec(b *testing.B, pool *pgxpool.Pool, sql string, args ...any) {
	b.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		b.Fatalf("%v\n%s", err, sql)
	}
}

func mustScan(b *testing.B, pool *pgxpool.Pool, sql string, dst any, args ...any) {
	b.Helper()
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(dst); err != nil {
		b.Fatalf("%v\n%s", err, sql)
	}
}

func mustScan2(b *testing.B, pool *pgxpool.Pool, sql string, d1, d2 any) {
	b.Helper()
	if err := pool.QueryRow(context.Background(), sql).Scan(d1, d2); err != nil {
		b.Fatalf("%v\n%s", err, sql)
	}
}

// load writes the workload, one autocommit statement (= one transaction) of
// 100 changes at a time.
func load(b *testing.B, pool *pgxpool.Pool) {
	b.Helper()
	batch := func(sql string, from int) { mustExec(b, pool, sql, from, from+txnSize-1) }
	for t := 0; t < (nImages+nNotes)/txnSize; t++ {
		c, r := t/4, t%4
		if r < 3 {
			batch(insImages, (c*3+r)*txnSize+1)
		} else {
			batch(insNotes, c*txnSize+1)
		}
	}
	for n := 1; n <= nUpdated; n += txnSize {
		batch(updImages, n)
	}
	for n := delImageFrom; n <= delImageTo; n += txnSize {
		batch(delImages, n)
	}
	for n := 1; n <= nDelNotes; n += txnSize {
		batch(delNotes, n)
	}
}

// recvlogical times pg_recvlogical reading the copied slot up to end.
func recvlogical(dbURL, end string) (time.Duration, error) {
	u, err := url.Parse(dbURL)
	if err != nil {
		return 0, err
	}
	bin, err := pgtest.FindBinaries()
	if err != nil {
		return 0, err
	}
	conn := fmt.Sprintf("host=%s port=%s user=%s dbname=%s", u.Hostname(), u.Port(), u.User.Username(), strings.TrimPrefix(u.Path, "/"))
	cmd := exec.Command(filepath.Join(bin, "pg_recvlogical"), "-d", conn, "--slot", "bench_decode", "--start",
		"-o", "proto_version=1", "-o", "publication_names=edgesync",
		"--endpos", end, "--no-loop", "-f", "/dev/null")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("pg_recvlogical: %w: %s", err, out)
	}
	return took, nil
}

// subjectCounts returns the stream's message count per subject.
func subjectCounts(b *testing.B, s jetstream.Stream) map[string]uint64 {
	b.Helper()
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter("edgesync.>"))
	if err != nil {
		b.Fatal(err)
	}
	return info.State.Subjects
}

// plainSQL writes the edges of the workload into scratch_edges, a copy of
// storage_edges (same columns, indexes and update trigger), as whole-set
// statements: the metadata and asset edges of every inserted memory, the
// asset edge changes of the URL updates, the deletes.
func plainSQL(pool *pgxpool.Pool) (time.Duration, int64, error) {
	ctx := context.Background()
	stmts := []string{
		`INSERT INTO scratch_edges (memory_id, memory_type, artifact, backend, present, last_synced_at)
SELECT id, CASE kind WHEN 'image' THEN 'image'::memory_type_t ELSE 'note' END, 'metadata', 'neon-db', true, now() FROM bench_src`,
		`INSERT INTO scratch_edges (memory_id, memory_type, artifact, backend, present, location, size_bytes, last_synced_at)
SELECT id, 'image', 'asset', 'vercel-blob', true, url, size, now() FROM bench_src WHERE kind = 'image'`,
		`UPDATE scratch_edges e SET present = s.new_url IS NOT NULL, location = s.new_url, last_synced_at = now()
FROM bench_src s WHERE s.upd AND e.memory_id = s.id AND e.memory_type = 'image' AND e.artifact = 'asset' AND e.backend = 'vercel-blob'`,
		`DELETE FROM scratch_edges e USING bench_src s
WHERE s.del AND e.memory_id = s.id AND e.memory_type = CASE s.kind WHEN 'image' THEN 'image'::memory_type_t ELSE 'note' END
  AND e.backend IN ('neon-db', 'vercel-blob')`,
	}
	var rows int64
	start := time.Now()
	var each []string
	for _, s := range stmts {
		t := time.Now()
		tag, err := pool.Exec(ctx, s)
		if err != nil {
			return 0, 0, fmt.Errorf("%w\n%s", err, s)
		}
		rows += tag.RowsAffected()
		each = append(each, fmt.Sprintf("%s %d rows %.3f s", strings.Fields(s)[0], tag.RowsAffected(), time.Since(t).Seconds()))
	}
	took := time.Since(start)
	fmt.Printf("pipeline bench: plain SQL statements: %s\n", strings.Join(each, "; "))
	return took, rows, nil
}

// latencyResult is what the steady-rate phase measured.
type latencyResult struct {
	rate             float64
	window, total    time.Duration
	n                int
	p50, p99, max    time.Duration
	ackP50, ackP99   time.Duration
	edgeN            int
	edgeP50, edgeP99 time.Duration
}

// latency writes at a steady 2,000 changes/s for about 20 s (a transaction of
// 10 changes every 5 ms: 8 image inserts, once warm also a URL update and a
// delete of images inserted a second earlier) and measures, for each memory
// event, the time from its commit (source.commit_time of the envelope, the
// Postgres commit timestamp) to the moment JetStream stored it (the stream's
// timestamp of the message: the server acks the publish once stored) and to
// its delivery to an ordered JetStream consumer in this process; and for
// each inserted image, from its commit to the delivery of its metadata edge
// event. The first 2 s are warm-up.
func latency(b *testing.B, pool *pgxpool.Pool, js jetstream.JetStream, d *daemonProc) latencyResult {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const (
		interval = 5 * time.Millisecond
		duration = 20 * time.Second
		warmup   = 2 * time.Second
		perTxn   = 8
		lag      = 200 // txns: updates and deletes hit images inserted 1 s earlier
	)
	cons, err := js.OrderedConsumer(ctx, "EDGESYNC", jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"edgesync.memory.>", "edgesync.edge.neon-db.created"},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		b.Fatal(err)
	}
	type rec struct {
		recv   time.Time
		stored time.Time // when JetStream stored it, i.e. acked the publish
		data   []byte
		edge   bool
	}
	var mu sync.Mutex
	var recs []rec
	cc, err := cons.Consume(func(m jetstream.Msg) {
		now := time.Now()
		r := rec{recv: now, data: m.Data(), edge: strings.HasPrefix(m.Subject(), "edgesync.edge.")}
		if meta, err := m.Metadata(); err == nil {
			r.stored = meta.Timestamp
		}
		mu.Lock()
		recs = append(recs, r)
		mu.Unlock()
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()

	conn, err := pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()
	const ins = `INSERT INTO images (id, owner_id, title, url, size_bytes, mime_type)
SELECT md5('lat-' || g)::uuid, md5('owner')::uuid, 'lat ' || g, 'https://blob.example/l/' || g || '.jpg', g, 'image/jpeg' FROM generate_series($1::int, $2::int) g`
	const upd = `UPDATE images SET url = 'https://blob.example/l/' || $1::int || '-v2.jpg', updated_at = now() WHERE id = md5('lat-' || $1::int)::uuid`
	const del = `DELETE FROM images WHERE id = md5('lat-' || $1::int)::uuid`
	start := time.Now()
	var written, txns int
	var warmStart time.Time
	warmWritten := 0
	for k := 0; ; k++ {
		next := start.Add(time.Duration(k) * interval)
		if next.Sub(start) >= duration {
			break
		}
		if w := time.Until(next); w > 0 {
			time.Sleep(w)
		}
		if warmStart.IsZero() && time.Since(start) >= warmup {
			warmStart, warmWritten = time.Now(), written
		}
		// One round trip, one implicit transaction (a pipeline up to Sync).
		var batch pgx.Batch
		g := k*perTxn + 1
		batch.Queue(ins, g, g+perTxn-1)
		n := perTxn
		if k >= lag {
			old := (k-lag)*perTxn + 1
			batch.Queue(upd, old)
			batch.Queue(del, old+1)
			n += 2
		}
		if err := conn.SendBatch(ctx, &batch).Close(); err != nil {
			b.Fatal(err)
		}
		written += n
		txns++
	}
	window := time.Since(warmStart)
	rate := float64(written-warmWritten) / window.Seconds()
	// Wait until everything written has arrived (the memory events).
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		n := 0
		for _, r := range recs {
			if !r.edge {
				n++
			}
		}
		mu.Unlock()
		if n >= written {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d memory events arrived within 60 s of the end of the latency phase\n%s", n, written, d.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the last edge events
	cc.Stop()
	mu.Lock()
	defer mu.Unlock()
	var ev struct {
		MemoryID string `json:"memory_id"`
		Op       string `json:"op"`
		Source   struct {
			CommitTime time.Time `json:"commit_time"`
		} `json:"source"`
		EmittedAt time.Time `json:"emitted_at"`
	}
	commits := map[string]time.Time{}
	var ds, acks, eds, toEmit, fromEmit []time.Duration
	var max time.Duration
	for _, r := range recs {
		if err := json.Unmarshal(r.data, &ev); err != nil {
			b.Fatal(err)
		}
		if r.edge {
			if c, ok := commits[ev.MemoryID]; ok && !c.Before(warmStart) {
				eds = append(eds, r.recv.Sub(c))
			}
			continue
		}
		if ev.Op == "created" {
			commits[ev.MemoryID] = ev.Source.CommitTime
		}
		if ev.Source.CommitTime.Before(warmStart) {
			continue
		}
		l := r.recv.Sub(ev.Source.CommitTime)
		ds = append(ds, l)
		acks = append(acks, r.stored.Sub(ev.Source.CommitTime))
		toEmit = append(toEmit, ev.EmittedAt.Sub(ev.Source.CommitTime))
		fromEmit = append(fromEmit, r.recv.Sub(ev.EmittedAt))
		if l > max {
			max = l
		}
	}
	res := latencyResult{rate: rate, window: window, total: time.Since(start), n: len(ds), max: max, edgeN: len(eds)}
	res.p50, res.p99 = benchdata.Percentiles(ds)
	res.ackP50, res.ackP99 = benchdata.Percentiles(acks)
	res.edgeP50, res.edgeP99 = benchdata.Percentiles(eds)
	fmt.Printf("pipeline bench: latency phase: %d changes in %d transactions in %s (%.0f changes/s after warm-up)\n",
		written, txns, time.Since(start).Round(time.Millisecond), rate)
	e50, e99 := benchdata.Percentiles(toEmit)
	r50, r99 := benchdata.Percentiles(fromEmit)
	fmt.Printf("pipeline bench: latency split at the envelope's emitted_at: commit -> emitted p50 %.2f ms p99 %.2f ms; emitted -> received p50 %.2f ms p99 %.2f ms\n",
		benchdata.MS(e50), benchdata.MS(e99), benchdata.MS(r50), benchdata.MS(r99))
	return res
}

// daemonProc is the daemon subprocess.
type daemonProc struct {
	kind     string // what runs: the real binary, or the test binary profiling itself
	cmd      *exec.Cmd
	spawned  time.Time
	profPath string
	logPath  string
	done     chan struct{}
	waitErr  error

	mu        sync.Mutex
	started   time.Time
	streaming time.Time
	profiled  chan struct{}
}

func freeAddr(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startDaemon(b *testing.B, dbURL, natsURL, profPath string) *daemonProc {
	b.Helper()
	dir := b.TempDir()
	d := &daemonProc{profPath: profPath, logPath: filepath.Join(dir, "daemon.log"), done: make(chan struct{}), profiled: make(chan struct{})}
	logf, err := os.Create(d.logPath)
	if err != nil {
		b.Fatal(err)
	}
	var cmd *exec.Cmd
	if profPath == "" {
		d.kind = "real binary"
		bin, err := benchdata.BuildEdgesync(dir)
		if err != nil {
			b.Fatal(err)
		}
		cmd = exec.Command(bin, "run")
	} else {
		d.kind = "test binary, CPU-profiled"
		cmd = exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
		cmd.Env = append(cmd.Env, "EDGESYNC_BENCH_SUBPROCESS=daemon", "EDGESYNC_BENCH_CPUPROFILE="+profPath)
	}
	cmd.Env = append(append(os.Environ(), cmd.Env...),
		"EDGESYNC_DATABASE_URL="+dbURL,
		"EDGESYNC_NATS_URL="+natsURL,
		"EDGESYNC_HTTP_ADDR="+freeAddr(b),
		"EDGESYNC_DATA_DIR="+dir,
		"EDGESYNC_RECONCILE_INTERVAL=0",
		"EDGESYNC_LOG_LEVEL=info",
		"EDGESYNC_ADMIN_TOKEN=bench",
	)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	d.spawned = time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	if profPath == "" {
		d.started = d.spawned // the real binary prints no marker
	}
	d.cmd = cmd
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // markers
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, markStarted+" "):
				ns, _ := strconv.ParseInt(strings.TrimPrefix(line, markStarted+" "), 10, 64)
				d.mu.Lock()
				d.started = time.Unix(0, ns)
				d.mu.Unlock()
			case line == markProfiled:
				d.mu.Lock()
				close(d.profiled)
				d.mu.Unlock()
			default:
				fmt.Fprintln(logf, line)
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() { // the log, and the moment the pipeline streams
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, `"msg":"streaming"`) {
				d.mu.Lock()
				if d.streaming.IsZero() {
					d.streaming = time.Now()
				}
				d.mu.Unlock()
			}
			fmt.Fprintln(logf, line)
		}
	}()
	go func() {
		wg.Wait()
		d.waitErr = cmd.Wait()
		logf.Close()
		close(d.done)
	}()
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-d.done
	})
	return d
}

func (d *daemonProc) startedAt() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.started
}

func (d *daemonProc) streamingAt() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.streaming
}

func (d *daemonProc) exited() error {
	select {
	case <-d.done:
		if d.waitErr == nil {
			return fmt.Errorf("exit status 0")
		}
		return d.waitErr
	default:
		return nil
	}
}

func (d *daemonProc) logTail() string { return benchdata.LogTail(d.logPath) }

// cpu is the daemon's user+system CPU time so far.
func (d *daemonProc) cpu() time.Duration { return procCPU(d.cmd.Process.Pid, false) }

// memory returns VmHWM and VmRSS in KiB.
func (d *daemonProc) memory() (hwm, rss int64) { return benchdata.ProcMemory(d.cmd.Process.Pid) }

// stopProfile ends the CPU profile (SIGUSR1) and waits for it to be written.
func (d *daemonProc) stopProfile() {
	if d.profPath == "" {
		return
	}
	d.mu.Lock()
	ch := d.profiled
	d.mu.Unlock()
	_ = d.cmd.Process.Signal(syscall.SIGUSR1)
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
	}
}

// profileTop summarises the catch-up CPU profile with go tool pprof.
func (d *daemonProc) profileTop(b *testing.B) string {
	b.Helper()
	if d.profPath == "" {
		return ""
	}
	return pprofTop(d.profPath, "-top", "-nodecount=25") + pprofTop(d.profPath, "-top", "-cum", "-nodecount=40")
}

func pprofTop(path string, args ...string) string {
	raw, err := exec.Command(benchdata.GoTool(), append(append([]string{"tool", "pprof"}, args...), path)...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("(go tool pprof failed: %v: %s)\n", err, raw)
	}
	return string(raw)
}

// nextProfile starts the next CPU profile (profPath.2).
func (d *daemonProc) nextProfile() {
	if d.profPath == "" {
		return
	}
	d.mu.Lock()
	d.profiled = make(chan struct{})
	d.mu.Unlock()
	_ = d.cmd.Process.Signal(syscall.SIGUSR2)
}

// stop ends the daemon with SIGTERM (it drains) and waits for it.
func (d *daemonProc) stop(b *testing.B) {
	b.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.done
		fmt.Println("pipeline bench: WARNING: the daemon did not exit within 30 s of SIGTERM")
	}
}

func procCPU(pid int, children bool) time.Duration { return benchdata.ProcCPU(pid, children) }

func selfCPU() time.Duration { return procCPU(os.Getpid(), false) }

// pgCPUMeter returns a function reading the CPU time of the whole Postgres
// cluster: the postmaster with its reaped children, plus every live child.
func pgCPUMeter(b *testing.B, pool *pgxpool.Pool) func() time.Duration {
	b.Helper()
	var backend int
	mustScan(b, pool, `SELECT pg_backend_pid()`, &backend)
	post := ppid(backend)
	return func() time.Duration { return benchdata.PostgresCPU(post) }
}

func ppid(pid int) int { return benchdata.ParentPID(pid) }

// pgSnapshot is the CPU time of each Postgres process, with what it is.
type pgSnapshot struct {
	post   int
	reaped time.Duration // postmaster's own and its exited children's
	cpu    map[int]time.Duration
	label  map[int]string
}

// pgProcs reads the CPU time of every process of the cluster and labels
// each from pg_stat_activity (backend type, application name).
func pgProcs(b *testing.B, pool *pgxpool.Pool) pgSnapshot {
	b.Helper()
	ctx := context.Background()
	var backend int
	mustScan(b, pool, `SELECT pg_backend_pid()`, &backend)
	s := pgSnapshot{post: ppid(backend), cpu: map[int]time.Duration{}, label: map[int]string{}}
	s.reaped = procCPU(s.post, true)
	rows, err := pool.Query(ctx, `SELECT pid, coalesce(backend_type, ''), coalesce(application_name, '') FROM pg_stat_activity`)
	if err != nil {
		b.Fatal(err)
	}
	for rows.Next() {
		var pid int
		var typ, app string
		if err := rows.Scan(&pid, &typ, &app); err != nil {
			b.Fatal(err)
		}
		l := typ
		switch {
		case typ == "walsender":
			l = "walsender"
		case typ == "client backend" && strings.HasPrefix(app, "edgesync"):
			l = "edgesync sessions"
		case typ == "client backend":
			l = "other sessions (bench)"
		case strings.HasPrefix(typ, "autovacuum"):
			l = "autovacuum"
		}
		s.label[pid] = l
	}
	rows.Close()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == s.post {
			continue
		}
		if ppid(pid) == s.post {
			s.cpu[pid] = procCPU(pid, false)
		}
	}
	return s
}

// since formats the CPU used per label between two snapshots.
func (s pgSnapshot) since(prev pgSnapshot) string {
	by := map[string]time.Duration{"exited processes": s.reaped - prev.reaped}
	for pid, c := range s.cpu {
		l, ok := s.label[pid]
		if !ok {
			l = "unlabelled"
		}
		by[l] += c - prev.cpu[pid] // a process new since prev counts from 0
	}
	type kv struct {
		k string
		v time.Duration
	}
	var all []kv
	for k, v := range by {
		if v > 0 {
			all = append(all, kv{k, v})
		}
	}
	slices.SortFunc(all, func(a, b kv) int { return int(b.v - a.v) })
	var parts []string
	for _, e := range all {
		parts = append(parts, fmt.Sprintf("%s %.2f s", e.k, e.v.Seconds()))
	}
	return strings.Join(parts, ", ")
}

// topStatements lists the statements with the most execution time since the
// last pg_stat_statements_reset.
func topStatements(b *testing.B, pool *pgxpool.Pool) string {
	b.Helper()
	out, err := benchdata.TopStatements(context.Background(), pool, 10, 150, false)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// slowPlan picks the slowest auto_explain entry of the edge upsert from the
// server log.
func slowPlan(log string) string {
	entries := strings.Split(log, "LOG:  duration: ")
	best, bestMS := "", 0.0
	for _, e := range entries[1:] {
		if !strings.Contains(e, "WITH i AS") {
			continue
		}
		if j := strings.Index(e, "\n20"); j > 0 { // the next log line
			e = e[:j]
		}
		ms, _ := strconv.ParseFloat(strings.Fields(e)[0], 64)
		if ms > bestMS {
			best, bestMS = e, ms
		}
	}
	if best == "" {
		return "(no auto_explain entry of the edge upsert in the server log)"
	}
	return "duration: " + best
}

// sampleWaits samples, every 10 ms until the returned function is called,
// what the daemon's sessions and the walsender are doing, and returns the
// shares per (session, state or wait event).
func sampleWaits(b *testing.B, dbURL string) func() string {
	b.Helper()
	if os.Getenv("BENCH_PIPELINE_SAMPLE") == "" {
		// Off by default: reading pg_stat_activity every 10 ms disturbs the
		// walsender enough to turn a p99 of 4 ms into one of seconds.
		return func() string {
			return "    (not sampled; BENCH_PIPELINE_SAMPLE=1 samples pg_stat_activity every 10 ms, which distorts the latency)\n"
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	counts := map[string]int{}
	samples := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer conn.Close(context.Background())
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rows, err := conn.Query(ctx, `SELECT CASE WHEN backend_type = 'walsender' THEN 'walsender'
					WHEN query LIKE '%WITH i AS%' OR query LIKE '%DELETE FROM storage_edges e%' THEN 'edge writer'
					ELSE 'other edgesync session' END,
				CASE WHEN state <> 'active' THEN coalesce(state, '?') WHEN wait_event IS NULL THEN 'active, no wait event (CPU or uninstrumented)'
					ELSE 'active: waits ' || wait_event_type || '/' || wait_event END
				FROM pg_stat_activity WHERE application_name = 'edgesync' AND (backend_type = 'walsender' OR state <> 'idle')`)
			if err != nil {
				return
			}
			for rows.Next() {
				var who, what string
				if rows.Scan(&who, &what) == nil {
					counts[who+" | "+what]++
				}
			}
			rows.Close()
			samples++
		}
	}()
	return func() string {
		cancel()
		<-done
		type kv struct {
			k string
			n int
		}
		var all []kv
		for k, n := range counts {
			all = append(all, kv{k, n})
		}
		slices.SortFunc(all, func(a, b kv) int { return b.n - a.n })
		var out strings.Builder
		for i, e := range all {
			if i == 12 {
				break
			}
			fmt.Fprintf(&out, "    %5.1f%%  %s\n", 100*float64(e.n)/float64(max(samples, 1)), e.k)
		}
		return out.String()
	}
}
