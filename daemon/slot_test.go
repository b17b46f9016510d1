package daemon

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgesync/edgesync/internal/pgtest"
)

// TestSlot_LostIsRecreatedAndResnapshotted: the slot disappears while the
// daemon is down (as Neon drops idle slots) and rows change meanwhile. On
// start the daemon says so loudly (log, metric, event), re-creates the slot,
// re-snapshots and asks for a reconcile; edges converge.
func TestSlot_LostIsRecreatedAndResnapshotted(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, pgtest.New(t))
	pool, ns, logf := e.pool, e.ns, e.logf
	p := e.start(t)
	waitSlot(t, pool, "edgesync")
	exec := func(sql string) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`INSERT INTO images (owner_id, url) SELECT gen_random_uuid(), 'https://blob/' || g FROM generate_series(1, 50) g`)
	converge(t, pool, "edgesync")
	if _, err := p.term(10 * time.Second); err != nil {
		t.Fatal(err)
	}

	// The walsender ends a moment after the daemon's exit.
	eventually(t, 20*time.Second, "the slot dropped", func() (bool, string) {
		_, err := pool.Exec(ctx, `SELECT pg_drop_replication_slot('edgesync')`)
		return err == nil, fmt.Sprint(err)
	})
	// Changes while the slot is gone: only a new snapshot can see them.
	exec(`INSERT INTO images (owner_id, url) SELECT gen_random_uuid(), 'https://blob/late-' || g FROM generate_series(1, 20) g`)
	exec(`UPDATE images SET url = url || '?v2' WHERE url NOT LIKE '%late%'`)

	p = e.start(t)
	converge(t, pool, "edgesync")
	eventually(t, 20*time.Second, "the slot_lost metric", func() (bool, string) {
		m := p.metrics()
		return strings.Contains(m, "\nedgesync_cdc_slot_lost_total 1"), "metric not 1"
	})
	eventually(t, 20*time.Second, "a reconcile for the lost slot", func() (bool, string) {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM reconcile_runs WHERE trigger = 'slot_lost'`).Scan(&n)
		return err == nil && n == 1, fmt.Sprint(n, err)
	})
	found := false
	for _, m := range readStream(t, ns.URL(), "EDGESYNC") {
		if m.Subject == "edgesync.sync.slot_lost" {
			found = true
			validateEvent(t, eventSchema(t, "#/$defs/slot_lost"), m.Subject, m.Raw)
		}
	}
	if !found {
		t.Fatal("no edgesync.sync.slot_lost event in the stream")
	}
	if !strings.Contains(readLog(t, logf), "replication slot lost") {
		t.Fatal("the log does not say the slot was lost")
	}
}

// TestSnapshot_InterruptedResumes kills the daemon in the middle of its
// initial snapshot, with writes going on; the next start resumes the
// snapshot, reports the edges it created, and edges converge.
func TestSnapshot_InterruptedResumes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, pgtest.New(t))
	pool, logf := e.pool, e.logf
	if _, err := pool.Exec(ctx, `INSERT INTO images (owner_id, url, size_bytes) SELECT gen_random_uuid(), 'https://blob/' || g, g FROM generate_series(1, 60000) g;
		INSERT INTO notes (owner_id, title) SELECT gen_random_uuid(), 'n' || g FROM generate_series(1, 20000) g`); err != nil {
		t.Fatal(err)
	}
	p := e.start(t)
	eventually(t, 60*time.Second, "the snapshot under way", func() (bool, string) {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM edgesync_pipeline_state WHERE snapshot_state = 'running' AND snapshot_after IS NOT NULL`).Scan(&n)
		return err == nil && n == 1, fmt.Sprint(err)
	})
	p.kill()
	var st string
	if err := pool.QueryRow(ctx, `SELECT snapshot_state FROM edgesync_pipeline_state`).Scan(&st); err != nil || st != "running" {
		t.Fatalf("snapshot state after the kill = %q, %v (it finished before the kill: make the data bigger)", st, err)
	}
	// Changes between the interruption and the resume.
	w, stopWrites := startWrites(pool, 9)
	p = e.start(t)
	eventually(t, 60*time.Second, "writes during the resume", func() (bool, string) { return w.commits.Load() > 20, "" })
	stopWrites()
	converge(t, pool, "edgesync")
	if !strings.Contains(readLog(t, logf), "resuming an interrupted initial snapshot") {
		t.Fatal("the log does not say the snapshot resumed")
	}
	var created int64
	if err := pool.QueryRow(ctx, `SELECT snapshot_edges FROM edgesync_pipeline_state WHERE snapshot_state = 'done'`).Scan(&created); err != nil {
		t.Fatal(err)
	}
	if created < 140000 {
		t.Fatalf("the snapshot reports %d edges created, want at least 140000 (60000 images × 2 + 20000 notes)", created)
	}
	_ = p
}

// TestSlot_StateRowMissingWithEmptyTables: the slot exists but the pipeline
// state row is gone (deleted by hand, or an old install) and the memory
// tables are empty. The resumed snapshot has no chunk to record; it must
// still finish and stream instead of failing every restart.
func TestSlot_StateRowMissingWithEmptyTables(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, pgtest.New(t))
	pool := e.pool
	p := e.start(t)
	waitSlot(t, pool, "edgesync")
	if _, err := p.term(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `DELETE FROM edgesync_pipeline_state`); err != nil {
		t.Fatal(err)
	}
	p = e.start(t)
	waitSlot(t, pool, "edgesync")
	if _, err := pool.Exec(ctx, `INSERT INTO images (owner_id, url) VALUES (gen_random_uuid(), 'https://blob/after')`); err != nil {
		t.Fatal(err)
	}
	converge(t, pool, "edgesync")
	if m := p.metrics(); !strings.Contains(m, "\nedgesync_cdc_restarts_total 0") {
		t.Fatalf("the pipeline restarted:\n%s", grepLines(m, "edgesync_cdc_restarts_total"))
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
