package daemon

import (
	"context"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/edgesync/edgesync/internal/natstest"
	"github.com/edgesync/edgesync/internal/pgtest"
)

// TestPipeline_SlowDownstreamKeepsTheWalsender blocks the edge writer for
// three times wal_sender_timeout while writes go on. The reader stops taking
// changes (bounded queues) but keeps sending status updates, so the server
// never times the walsender out and the session never restarts; afterwards
// everything converges.
func TestPipeline_SlowDownstreamKeepsTheWalsender(t *testing.T) {
	ctx := context.Background()
	cluster := pgtest.StartClusterConf(t, "wal_sender_timeout = 2s")
	dbURL := cluster.NewDB(t)
	pool := pgtest.Pool(t, dbURL)
	ns := natstest.Start(t)
	cfg := testConfig(t, dbURL, ns.URL())
	rd := startDaemon(t, cfg)
	waitSlot(t, pool, cfg.Slot)

	// Hold storage_edges so no edge batch can commit.
	blocker, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blocker.Exec(ctx, `LOCK TABLE storage_edges IN EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS change_log (seq bigint PRIMARY KEY, memory_id uuid NOT NULL, op text NOT NULL, token text)`); err != nil {
		t.Fatal(err)
	}
	w, stopWrites := startWrites(pool, 11)
	// A wall-clock span is the point of this test: three walsender timeouts.
	blockedUntil := time.Now().Add(6 * time.Second)
	for time.Now().Before(blockedUntil) {
		time.Sleep(100 * time.Millisecond)
	}
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	stopWrites()
	if w.commits.Load() < 20 {
		t.Fatalf("only %d transactions written while the edge writer was blocked", w.commits.Load())
	}
	converge(t, pool, cfg.Slot)
	var m dto.Metric
	if err := rd.d.metrics.Restarts.Write(&m); err != nil {
		t.Fatal(err)
	}
	if n := m.GetCounter().GetValue(); n != 0 {
		t.Fatalf("the pipeline restarted %v times while downstream was slow (walsender timeout?)", n)
	}
	checkStream(t, pool, ns.URL(), cfg.Stream)
}
