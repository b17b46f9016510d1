package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgesync/edgesync/internal/pgtest"
)

// TestOrder_OwnEdgeWriteAfterAnotherWritersChange: the events of one memory
// are stored in commit order even when another writer changes one of its
// edges between the memory change and the daemon's edge write for it, and the
// daemon is behind. This is what publishing the daemon's own edge events from
// its writer (instead of from the slot) would break: the write commits after
// the other change, but would be published before the slot reader reaches it.
func TestOrder_OwnEdgeWriteAfterAnotherWritersChange(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, pgtest.New(t))
	pool := e.pool
	p := e.start(t)
	waitSlot(t, pool, "edgesync")

	var id string
	if err := pool.QueryRow(ctx, `INSERT INTO images (owner_id, title, url, size_bytes)
		VALUES (gen_random_uuid(), 'm', 'https://blob/one.jpg', 1) RETURNING id::text`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the memory's edges", func() (bool, string) {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM storage_edges WHERE memory_id = $1`, id).Scan(&n)
		return err == nil && n == 2, fmt.Sprint(n, err)
	})
	if took, err := p.term(10 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v after %s", err, took)
	}

	// While the daemon is away: the memory's URL changes (its blob edge is
	// rewritten once the daemon reads this), a backlog follows, and then
	// another writer changes the same blob edge. The daemon's write commits
	// after the other writer's change, while its reader is still in the
	// backlog.
	if _, err := pool.Exec(ctx, `UPDATE images SET url = 'https://blob/two.jpg' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO images (owner_id, title, url, size_bytes)
		SELECT gen_random_uuid(), 'backlog ' || g, 'https://blob/b' || g || '.jpg', g FROM generate_series(1, 5000) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE storage_edges SET content_hash = 'by-another-writer'
		WHERE memory_id = $1 AND artifact = 'asset' AND backend = 'vercel-blob'`, id); err != nil {
		t.Fatal(err)
	}
	p = e.start(t)

	type blobEdge struct {
		Location    *string `json:"location"`
		ContentHash *string `json:"content_hash"`
	}
	var seen []string
	eventually(t, 60*time.Second, "both blob edge events", func() (bool, string) {
		seen = seen[:0]
		ours, theirs := false, false
		for _, m := range readStream(t, e.ns.URL(), "EDGESYNC") {
			if m.Event.MemoryID == nil || *m.Event.MemoryID != id {
				continue
			}
			step := m.Subject
			if strings.Contains(m.Subject, ".edge.vercel-blob.") {
				var after blobEdge
				_ = json.Unmarshal(m.Event.After, &after)
				step = fmt.Sprintf("blob location=%s hash=%s", deref(after.Location), deref(after.ContentHash))
				ours = ours || deref(after.Location) == "https://blob/two.jpg"
				theirs = theirs || deref(after.Location) == "https://blob/one.jpg" && deref(after.ContentHash) != ""
			}
			seen = append(seen, step)
		}
		return ours && theirs, strings.Join(seen, "; ")
	})
	want := []string{
		"blob location=https://blob/one.jpg hash=",                  // created before the stop
		"edgesync.memory.image.updated",                             // the URL change
		"blob location=https://blob/one.jpg hash=by-another-writer", // the other writer
		"blob location=https://blob/two.jpg hash=by-another-writer", // the daemon's write, last
	}
	var got []string
	for _, s := range seen {
		if strings.HasPrefix(s, "blob ") || s == "edgesync.memory.image.updated" {
			got = append(got, s)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the memory's events in stream order:\n  %s\nwant (commit order):\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if took, err := p.term(10 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v after %s", err, took)
	}
}
