package daemon

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgesync/edgesync/internal/natstest"
	"github.com/edgesync/edgesync/internal/pgtest"
)

// TestPipeline_EndToEnd drives every kind of change through a running daemon
// and checks the edges and the stream against CONTRACT sections 4 and 5.
func TestPipeline_EndToEnd(t *testing.T) {
	ctx := context.Background()
	dbURL := pgtest.New(t)
	pool := pgtest.Pool(t, dbURL)
	ns := natstest.Start(t)

	// Rows that exist before the first start: the snapshot gives them edges.
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`INSERT INTO images (id, owner_id, title, url, size_bytes) VALUES
		('00000000-0000-0000-0000-0000000000a1', gen_random_uuid(), 'pre', 'https://blob/pre.jpg', 10)`)
	exec(`INSERT INTO notes (id, owner_id, title, body) VALUES ('00000000-0000-0000-0000-0000000000a2', gen_random_uuid(), 'pre note', 'x')`)

	cfg := testConfig(t, dbURL, ns.URL())
	startDaemon(t, cfg)
	eventually(t, 20*time.Second, "snapshot edges", func() (bool, string) {
		got, want := edgesOf(t, pool), expectedEdges(t, pool)
		return len(want) == 3 && diffEdges(got, want) == "", diffEdges(got, want)
	})

	// Inserts, URL updates, URL to null, deletes, truncate.
	exec(`INSERT INTO images (id, owner_id, title, url, size_bytes) VALUES
		('00000000-0000-0000-0000-0000000000b1', gen_random_uuid(), 'one', 'https://blob/1.jpg', 100),
		('00000000-0000-0000-0000-0000000000b2', gen_random_uuid(), 'two', NULL, NULL)`)
	exec(`INSERT INTO videos (id, owner_id, title, url, size_bytes) VALUES ('00000000-0000-0000-0000-0000000000c1', gen_random_uuid(), 'v', 'https://blob/v.mp4', 5000)`)
	exec(`INSERT INTO documents (id, owner_id, title, url) VALUES ('00000000-0000-0000-0000-0000000000d1', gen_random_uuid(), 'doc', 'https://blob/d.pdf')`)
	exec(`INSERT INTO notes (id, owner_id, title, body) VALUES ('00000000-0000-0000-0000-0000000000e1', gen_random_uuid(), 'héllo ✓', (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 400)))`)
	exec(`UPDATE images SET url = 'https://blob/1-v2.jpg', size_bytes = 200 WHERE id = '00000000-0000-0000-0000-0000000000b1'`)
	exec(`UPDATE images SET url = 'https://blob/2.jpg' WHERE id = '00000000-0000-0000-0000-0000000000b2'`)
	exec(`UPDATE videos SET url = NULL WHERE id = '00000000-0000-0000-0000-0000000000c1'`)
	exec(`UPDATE notes SET title = 'renamed' WHERE id = '00000000-0000-0000-0000-0000000000e1'`) // body is an unchanged TOAST value
	exec(`DELETE FROM documents WHERE id = '00000000-0000-0000-0000-0000000000d1'`)
	exec(`INSERT INTO audio (id, owner_id, url) VALUES ('00000000-0000-0000-0000-0000000000f1', gen_random_uuid(), 'https://blob/a.mp3'),
		('00000000-0000-0000-0000-0000000000f2', gen_random_uuid(), 'https://blob/b.mp3')`)
	exec(`TRUNCATE audio`)

	// The video's blob edge stays, not present, without a location.
	want := func() []string {
		w := expectedEdges(t, pool)
		w = append(w, edgeRow{MemoryID: "00000000-0000-0000-0000-0000000000c1", MemoryType: "video", Artifact: "asset", Backend: "vercel-blob", Present: false, Size: 5000}.String())
		return w
	}
	eventually(t, 20*time.Second, "edges in step", func() (bool, string) {
		d := diffEdges(edgesOf(t, pool), want())
		return d == "", d
	})

	// Exactly one event per change, on the right subject, with stable ids.
	wantMem := map[string]int{
		"edgesync.memory.image.created":    2,
		"edgesync.memory.video.created":    1,
		"edgesync.memory.document.created": 1,
		"edgesync.memory.note.created":     1,
		"edgesync.memory.image.updated":    2,
		"edgesync.memory.video.updated":    1,
		"edgesync.memory.note.updated":     1,
		"edgesync.memory.document.deleted": 1,
		"edgesync.memory.audio.created":    2,
		"edgesync.memory.audio.truncated":  1,
	}
	var msgs []streamMsg
	eventually(t, 20*time.Second, "memory events", func() (bool, string) {
		msgs = readStream(t, ns.URL(), cfg.Stream)
		got := map[string]int{}
		for _, m := range msgs {
			if strings.Contains(m.Subject, ".memory.") {
				got[m.Subject]++
			}
		}
		for s, n := range wantMem {
			if got[s] != n {
				return false, s
			}
		}
		// The daemon's own edge writes come back through the slot a little
		// later: wait for them too.
		e := map[string]int{}
		for _, m := range msgs {
			if strings.Contains(m.Subject, ".edge.") {
				e[m.Subject]++
			}
		}
		// A memory inserted and deleted within one edge batch collapses to
		// nothing, so the document's edges may or may not show up.
		if e["edgesync.edge.neon-db.created"] < 8 || e["edgesync.edge.neon-db.deleted"] < 2 {
			return false, fmt.Sprint(e)
		}
		return len(got) == len(wantMem), "extra subjects"
	})
	schema := eventSchema(t, "")
	ids := map[string]bool{}
	for _, m := range msgs {
		if strings.Contains(m.Subject, ".memory.") || strings.Contains(m.Subject, ".edge.") {
			validateEvent(t, schema, m.Subject, m.Raw)
		}
		if m.MsgID == "" {
			t.Fatalf("message on %s has no Nats-Msg-Id", m.Subject)
		}
		if ids[m.MsgID] {
			t.Fatalf("msg id %s twice in the stream", m.MsgID)
		}
		ids[m.MsgID] = true
		if strings.Contains(m.Subject, ".memory.") || strings.Contains(m.Subject, ".edge.") {
			if m.Event.ID != m.MsgID {
				t.Errorf("envelope id %q != msg id %q", m.Event.ID, m.MsgID)
			}
			if !strings.HasPrefix(m.MsgID, cfg.Slot+"/") || m.Event.Source.CommitLSN == "" || m.Event.Source.Table == "" {
				t.Errorf("bad envelope source: %s", m.Raw)
			}
		}
		if strings.HasSuffix(m.Subject, ".note.updated") {
			if !strings.Contains(string(m.Event.After), `"renamed"`) || len(m.Event.UnchangedToast) != 1 || m.Event.UnchangedToast[0] != "body" {
				t.Errorf("unchanged TOAST body not reported: %s", m.Raw)
			}
			if strings.Contains(string(m.Event.After), `"body":null`) {
				t.Errorf("unchanged TOAST value turned into null: %s", m.Raw)
			}
		}
	}
	// Edge events: every edge change the daemon made, on edge.<backend>.<op>.
	edgeSubjects := map[string]int{}
	for _, m := range msgs {
		if strings.Contains(m.Subject, ".edge.") {
			edgeSubjects[m.Subject]++
			if m.Event.Backend == "" || m.Event.Artifact == "" || m.Event.MemoryID == nil {
				t.Errorf("edge event without its key: %s", m.Raw)
			}
		}
	}
	// How many updates show depends on batching (changes to one memory within
	// a batch collapse); creations and deletions do not.
	if c, d := edgeSubjects["edgesync.edge.neon-db.created"], edgeSubjects["edgesync.edge.neon-db.deleted"]; c-d != 6 || c < 8 || edgeSubjects["edgesync.edge.vercel-blob.created"] < 5 {
		t.Errorf("edge events = %v", edgeSubjects)
	}
}
