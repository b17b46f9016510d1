package scaleout

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/bench/internal/benchdata"
	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/internal/natstest"
	"github.com/edgesync/edgesync/internal/pgtest"
)

// BenchmarkScaleOut runs the same 100,000-change workload (60,000 inserts,
// 20,000 URL updates, 20,000 deletes, half on images+videos, half on
// notes+documents+audio, in transactions of 100) twice on one cluster, each
// time on a fresh database whose slots were created before the load: once
// with one pipeline mapping all five tables, once with two pipelines (the
// real binary as two processes) splitting them. Each round is timed from
// the daemons' start until every event is acked by JetStream and every slot
// is confirmed past the load and the daemons' own edge writes.
func BenchmarkScaleOut(b *testing.B) {
	for range b.N { // one run is the measurement; -benchtime 1x is the intended use
		runScaleOut(b)
	}
}

type pipelineSpec struct {
	name   string
	tables []string
}

type roundResult struct {
	took    time.Duration
	changes int
	pgCPU   time.Duration // the whole cluster, walsenders included
	per     []pipelineResult
}

type pipelineResult struct {
	name               string
	pastLoad           time.Duration // until its slot was confirmed past the load
	done               time.Duration // until its slot was confirmed past everything
	daemonCPU, walsCPU time.Duration
	peakRSS            int64
}

func runScaleOut(b *testing.B) {
	cluster := pgtest.StartCluster(b)
	bin, err := benchdata.BuildEdgesync(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	ts := workload(1)
	all := append(append([]string{}, media...), docs...)
	one := round(b, cluster, bin, ts, []pipelineSpec{{"edgesync_all", all}})
	two := round(b, cluster, bin, ts, []pipelineSpec{{"edgesync_media", media}, {"edgesync_docs", docs}})

	rate := func(r roundResult) float64 { return float64(r.changes) / r.took.Seconds() }
	ratio := rate(two) / rate(one)
	fmt.Printf("scale-out bench: RESULT (%d CPUs)\n", runtime.NumCPU())
	fmt.Printf("    | %-34s | %8s | %11s | %-21s | %11s | %13s | %9s |\n", "round / pipeline", "wall", "changes/s", "slot past load / all", "daemon CPU", "walsender CPU", "peak RSS")
	fmt.Printf("    | %s | %s | %s | %s | %s | %s | %s |\n", strings.Repeat("-", 34), strings.Repeat("-", 8), strings.Repeat("-", 11), strings.Repeat("-", 21), strings.Repeat("-", 11), strings.Repeat("-", 13), strings.Repeat("-", 9))
	for _, r := range []struct {
		label string
		res   roundResult
	}{{"one pipeline, all five tables", one}, {"two pipelines together", two}} {
		fmt.Printf("    | %-34s | %6.2f s | %11.0f | %-21s | %11s | %13s | %9s |\n", r.label, r.res.took.Seconds(), rate(r.res), "", "", "", "")
		for _, p := range r.res.per {
			fmt.Printf("    | %-34s | %8s | %11s | %7.2f s / %8.2f s | %9.2f s | %11.2f s | %5.1f MiB |\n", "  "+p.name, "", "", p.pastLoad.Seconds(), p.done.Seconds(), p.daemonCPU.Seconds(), p.walsCPU.Seconds(), float64(p.peakRSS)/1024)
		}
	}
	fmt.Printf("    Postgres CPU (whole cluster, walsenders included): one pipeline %.2f s, two pipelines %.2f s\n", one.pgCPU.Seconds(), two.pgCPU.Seconds())
	fmt.Printf("    ratio two together / one = %.2f (goal >= 0.9)\n", ratio)
	b.ReportMetric(rate(one), "one-changes/s")
	b.ReportMetric(rate(two), "two-changes/s")
	b.ReportMetric(ratio, "ratio")
}

// round loads the workload into a fresh database whose slots (one per
// pipeline) already exist, then runs the pipelines until they are done.
func round(b *testing.B, cluster *pgtest.Cluster, bin string, ts []table, specs []pipelineSpec) roundResult {
	b.Helper()
	ctx := context.Background()
	dbURL := cluster.NewDB(b)
	pool := pgtest.Pool(b, dbURL)
	for _, s := range specs {
		idents := []string{"gallery_items", "storage_edges"}
		for _, t := range s.tables {
			idents = append(idents, pgx.Identifier{t}.Sanitize())
		}
		mustExec(b, pool, `CREATE PUBLICATION `+pgx.Identifier{s.name}.Sanitize()+` FOR TABLE `+strings.Join(idents, ", "))
		mustExec(b, pool, `INSERT INTO edgesync_pipeline_state (slot, snapshot_state) VALUES ($1, 'done')`, s.name)
		mustExec(b, pool, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, s.name)
	}
	start := time.Now()
	if err := loadInserts(ctx, pool, ts, 100); err != nil {
		b.Fatal(err)
	}
	if err := loadChanges(ctx, pool, ts, 100); err != nil {
		b.Fatal(err)
	}
	var end string
	mustScan(b, pool, `SELECT pg_current_wal_lsn()::text`, &end)
	mustExec(b, pool, `CHECKPOINT`)
	fmt.Printf("scale-out bench: %d pipeline(s): loaded %d changes in %s\n", len(specs), total(ts), time.Since(start).Round(time.Millisecond))

	ns := natstest.Start(b)
	js, err := jetstream.New(ns.Conn(b))
	if err != nil {
		b.Fatal(err)
	}
	want := expectedSubjects(ts)
	var wantTotal uint64
	for _, n := range want {
		wantTotal += n
	}
	var backend int // any session: its parent is the postmaster
	mustScan(b, pool, `SELECT pg_backend_pid()`, &backend)
	post := benchdata.ParentPID(backend)
	pg0 := benchdata.PostgresCPU(post)
	var procs []*daemonProc
	for _, s := range specs {
		procs = append(procs, startDaemon(b, bin, dbURL, ns.URL(), s))
	}
	started := time.Now()
	res := roundResult{changes: total(ts), per: make([]pipelineResult, len(specs))}
	walsPID := make([]int, len(specs))
	var tAcked time.Time
	var afterOwn string
	done := make([]bool, len(specs))
	deadline := started.Add(10 * time.Minute)
	for remaining := len(specs); remaining > 0; {
		if time.Now().After(deadline) {
			b.Fatalf("not done within 10 minutes (acked: %v)\n%s", !tAcked.IsZero(), procs[0].logTail())
		}
		for i, p := range procs {
			if err := p.exited(); err != nil {
				b.Fatalf("daemon %s exited: %v\n%s", specs[i].name, err, p.logTail())
			}
			if walsPID[i] == 0 {
				mustScan(b, pool, `SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1`, &walsPID[i], specs[i].name)
			}
		}
		if tAcked.IsZero() {
			if n := countStream(b, js); n >= wantTotal {
				tAcked = time.Now()
				mustScan(b, pool, `SELECT pg_current_wal_lsn()::text`, &afterOwn)
			}
		}
		for i, s := range specs {
			if res.per[i].pastLoad == 0 {
				var ok bool
				mustScan(b, pool, `SELECT coalesce(confirmed_flush_lsn >= $1::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = $2`, &ok, end, s.name)
				if ok {
					res.per[i].pastLoad = time.Since(started)
				}
			}
			if done[i] || tAcked.IsZero() || res.per[i].pastLoad == 0 {
				continue
			}
			var ok bool
			mustScan(b, pool, `SELECT coalesce(confirmed_flush_lsn >= $1::pg_lsn AND confirmed_flush_lsn >= $2::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = $3`,
				&ok, end, afterOwn, s.name)
			if ok {
				done[i], remaining = true, remaining-1
				res.per[i].name, res.per[i].done = s.name, time.Since(started)
				res.per[i].daemonCPU, res.per[i].walsCPU = benchdata.ProcCPU(procs[i].pid(), false), benchdata.ProcCPU(walsPID[i], false)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.took = time.Since(started)
	res.pgCPU = benchdata.PostgresCPU(post) - pg0
	got := streamSubjects(b, js)
	for s, n := range want {
		if got[s] != n {
			b.Fatalf("stream has %d messages on %s, want %d (all: %v)", got[s], s, n, got)
		}
	}
	for i, p := range procs {
		res.per[i].peakRSS, _ = benchdata.ProcMemory(p.pid())
		p.stop()
	}
	fmt.Printf("scale-out bench: %d pipeline(s): %d changes, %d events in %.3f s; Postgres CPU %.2f s (walsenders included)\n",
		len(specs), res.changes, wantTotal, res.took.Seconds(), res.pgCPU.Seconds())
	return res
}

func streamSubjects(b *testing.B, js jetstream.JetStream) map[string]uint64 {
	b.Helper()
	s, err := js.Stream(context.Background(), "EDGESYNC")
	if err != nil {
		b.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter("edgesync.>"))
	if err != nil {
		b.Fatal(err)
	}
	return info.State.Subjects
}

// daemonProc is the real binary running one pipeline.
type daemonProc struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

func startDaemon(b *testing.B, bin, dbURL, natsURL string, s pipelineSpec) *daemonProc {
	b.Helper()
	dir := b.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	d := &daemonProc{logPath: filepath.Join(dir, "daemon.log"), done: make(chan struct{})}
	logf, err := os.Create(d.logPath)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "run")
	cmd.Env = append(os.Environ(),
		"EDGESYNC_DATABASE_URL="+dbURL,
		"EDGESYNC_NATS_URL="+natsURL,
		"EDGESYNC_HTTP_ADDR="+addr,
		"EDGESYNC_DATA_DIR="+dir,
		"EDGESYNC_SLOT="+s.name,
		"EDGESYNC_PUBLICATION="+s.name,
		"EDGESYNC_TABLES="+config.FormatTables(domainTables(s.tables)),
		"EDGESYNC_RECONCILE_INTERVAL=0",
		"EDGESYNC_ADMIN_TOKEN=bench",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	d.cmd = cmd
	go func() {
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

func (d *daemonProc) pid() int { return d.cmd.Process.Pid }

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

// stop ends the daemon with SIGTERM (it drains) and waits for it.
func (d *daemonProc) stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.done
	}
}

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
