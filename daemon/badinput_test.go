package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/internal/natstest"
	"github.com/edgesync/edgesync/internal/pgtest"
)

// TestBadInput_OddRows: very long values, unicode, nulls where allowed, a
// row too big for one NATS message, and a table without a primary key added
// to the publication by mistake. Nothing panics, nothing is lost, and the
// pipeline keeps going.
func TestBadInput_OddRows(t *testing.T) {
	ctx := context.Background()
	dbURL := pgtest.New(t)
	pool := pgtest.Pool(t, dbURL)
	ns := natstest.Start(t)
	cfg := testConfig(t, dbURL, ns.URL())
	startDaemon(t, cfg)
	waitSlot(t, pool, cfg.Slot)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// A table edgesync does not handle, without a primary key, in its publication.
	exec(`CREATE TABLE stray (v text)`)
	exec(`ALTER PUBLICATION edgesync ADD TABLE stray`)
	exec(`INSERT INTO stray VALUES ('ignored')`)

	longURL := "https://blob/" + strings.Repeat("a", 200_000)
	exec(`INSERT INTO images (id, owner_id, title, url, size_bytes, mime_type) VALUES
		('00000000-0000-0000-0000-000000000101', gen_random_uuid(), NULL, $1, NULL, NULL),
		('00000000-0000-0000-0000-000000000102', gen_random_uuid(), '日本語 🎞️ "quoted" \ back\slash', 'https://blob/ünïcödé ✓.jpg', 0, 'image/jpeg')`, longURL)
	// A note far bigger than NATS' 1 MiB max_payload (random text: TOASTed).
	exec(`INSERT INTO notes (id, owner_id, body) VALUES ('00000000-0000-0000-0000-000000000103', gen_random_uuid(),
		(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 60000)))`)
	exec(`INSERT INTO notes (id, owner_id, title) VALUES ('00000000-0000-0000-0000-000000000104', gen_random_uuid(), 'after the odd rows')`)

	eventually(t, 20*time.Second, "edges of the odd rows", func() (bool, string) {
		d := diffEdges(edgesOf(t, pool), expectedEdges(t, pool))
		return d == "", d
	})
	schema := eventSchema(t, "")
	eventually(t, 20*time.Second, "their events", func() (bool, string) {
		n := 0
		for _, m := range readStream(t, ns.URL(), cfg.Stream) {
			if !strings.Contains(m.Subject, ".memory.") {
				continue
			}
			validateEvent(t, schema, m.Subject, m.Raw)
			n++
			if *m.Event.MemoryID == "00000000-0000-0000-0000-000000000103" {
				if len(m.Event.Oversized) != 1 || m.Event.Oversized[0] != "body" {
					t.Errorf("oversized note: oversized_columns = %v", m.Event.Oversized)
				}
			}
			if *m.Event.MemoryID == "00000000-0000-0000-0000-000000000102" && !strings.Contains(string(m.Raw), "日本語 🎞️") {
				t.Errorf("unicode title mangled: %s", m.Raw)
			}
		}
		return n == 4, "memory events so far"
	})
}

// TestBadInput_WalLevelReplica: a server without logical decoding is refused
// at start with the fix in the message.
func TestBadInput_WalLevelReplica(t *testing.T) {
	c := pgtest.StartClusterConf(t, "wal_level = replica\nmax_wal_senders = 10")
	dbURL := c.NewDB(t)
	ns := natstest.Start(t)
	cfg := testConfig(t, dbURL, ns.URL())
	_, err := New(context.Background(), cfg, zap.NewNop())
	if !errors.Is(err, cdc.ErrWalLevel) || !strings.Contains(err.Error(), "set wal_level = logical") {
		t.Fatalf("New = %v, want the wal_level error with its fix", err)
	}
}

// TestBadInput_NoReplicationPrivilege: a role without REPLICATION is told
// what to grant.
func TestBadInput_NoReplicationPrivilege(t *testing.T) {
	ctx := context.Background()
	dbURL := pgtest.New(t)
	pool := pgtest.Pool(t, dbURL)
	if _, err := pool.Exec(ctx, `DO $$ BEGIN CREATE ROLE plain LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`); err != nil {
		t.Fatal(err)
	}
	plainURL := strings.Replace(dbURL, "postgres@", "plain@", 1)
	ns := natstest.Start(t)
	cfg := testConfig(t, plainURL, ns.URL())
	_, err := New(ctx, cfg, zap.NewNop())
	if !errors.Is(err, cdc.ErrNoReplication) || !strings.Contains(err.Error(), `ALTER ROLE "plain" REPLICATION`) {
		t.Fatalf("New = %v, want the REPLICATION error with its fix", err)
	}
}

// TestBadInput_TableInTwoPipelines: a memory table left in another
// pipeline's publication (one that also carries storage_edges) is named in a
// warning at start, since both pipelines would publish its changes; a
// publication of the app's own (no storage_edges) is not edgesync's business.
func TestBadInput_TableInTwoPipelines(t *testing.T) {
	ctx := context.Background()
	dbURL := pgtest.New(t)
	pool := pgtest.Pool(t, dbURL)
	for _, q := range []string{
		`CREATE PUBLICATION edgesync_b FOR TABLE notes, storage_edges`,
		`CREATE PUBLICATION app_audit FOR TABLE images`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	ns := natstest.Start(t)
	cfg := testConfig(t, dbURL, ns.URL())
	core, logs := observer.New(zap.WarnLevel)
	startDaemonLog(t, cfg, zap.New(core))
	waitSlot(t, pool, cfg.Slot)
	overlaps := func() []string {
		var out []string
		for _, e := range logs.FilterMessageSnippet("another pipeline's publication").All() {
			f := e.ContextMap()
			out = append(out, fmt.Sprint(f["other_publication"], " ", f["table"]))
		}
		return out
	}
	if got := overlaps(); len(got) != 1 || got[0] != "edgesync_b public.notes" {
		t.Errorf("overlap warnings %q, want one for edgesync_b public.notes", got)
	}
}
