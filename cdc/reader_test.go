package cdc_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/internal/pgtest"
)

// TestReader_ConfirmsWALEndWithoutWaitingForTheStatusInterval: after the last
// transaction of the publication, WAL the publication does not carry (here
// another table's insert) is confirmed through the walsender's keepalive,
// which answers the reader's own status report within a millisecond or so.
// That confirmation must be reported promptly, not at the next
// StatusInterval (an hour here): a reader that only woke up for in-flight
// work left the slot behind the WAL end for up to the whole interval.
func TestReader_ConfirmsWALEndWithoutWaitingForTheStatusInterval(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	url := pgtest.NewEmpty(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, q := range []string{
		`CREATE TABLE published (id int PRIMARY KEY)`,
		`CREATE TABLE other (id int PRIMARY KEY)`,
		`CREATE PUBLICATION p FOR TABLE published`,
		`SELECT pg_create_logical_replication_slot('reader_test', 'pgoutput')`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		// The slot must go before the database can be dropped.
		c, err := pgx.Connect(context.Background(), url)
		if err == nil {
			_, _ = c.Exec(context.Background(), `SELECT pg_drop_replication_slot('reader_test')`)
			c.Close(context.Background())
		}
	})
	var start cdc.LSN
	if err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'reader_test'`).Scan(&start); err != nil {
		t.Fatal(err)
	}

	rc, err := cdc.ConnectReplication(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	tracker := cdc.NewTracker(start)
	reader := cdc.NewReader(cdc.ReaderConfig{Slot: "reader_test", Publication: "p", StatusInterval: time.Hour}, rc, tracker, zaptest.NewLogger(t))
	rctx, stop := context.WithCancel(ctx)
	out := make(chan cdc.Item, 16)
	done := make(chan error, 1)
	go func() { done <- reader.Run(rctx, start, out) }()
	defer func() {
		stop()
		<-done
		rc.Close(context.Background())
	}()
	// The consumer: every transaction is durable at its commit.
	go func() {
		var p *cdc.Pending
		for {
			select {
			case it := <-out:
				switch it.Kind {
				case cdc.KindBegin:
					p = tracker.Open()
				case cdc.KindCommit:
					p.Seal(it.Txn.End)
				}
			case <-rctx.Done():
				return
			}
		}
	}()

	// One published transaction, then WAL of another table right after it:
	// the walsender has read past the first when the reader confirms it.
	if _, err := conn.Exec(ctx, `INSERT INTO published VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO other SELECT generate_series(1, 100)`); err != nil {
		t.Fatal(err)
	}
	var end cdc.LSN
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()`).Scan(&end); err != nil {
		t.Fatal(err)
	}
	// Well under the hour the reader would otherwise wait; the bound is
	// generous for a loaded machine, not a speed goal, and shorter than
	// the 15 s after which the server logs a running-transactions record:
	// WAL that would wake the walsender again and hide the fault.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var confirmed cdc.LSN
		if err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'reader_test'`).Scan(&confirmed); err != nil {
			t.Fatal(err)
		}
		if confirmed >= end {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot confirmed %s, WAL end %s (tracker %s): the reader did not report the confirmed WAL end", confirmed, end, tracker.Confirmed())
		}
		select {
		case err := <-done:
			t.Fatalf("reader stopped: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
