package reconcile

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestService_ImportLegacy(t *testing.T) {
	e := newEnv(t)
	e.exec(`ALTER TABLE images ADD COLUMN stored_on_icp boolean`)
	e.exec(`ALTER TABLE notes ADD COLUMN on_icp boolean NOT NULL DEFAULT false`)
	s := e.service(func(c *Config) { c.ChunkSize = 2 })
	ctx := context.Background()
	flag := func(table, col, id string, v *bool) {
		e.exec(`UPDATE `+table+` SET `+col+` = $2 WHERE id = $1::text::uuid`, id, v)
	}
	yes, no := true, false

	a := e.memory("images", "https://blob/a", 1) // flagged, URL: 2 created
	flag("images", "stored_on_icp", a, &yes)
	b := e.memory("images", "", 0) // flagged, no URL: 1 created
	flag("images", "stored_on_icp", b, &yes)
	c := e.memory("images", "https://blob/c", 3) // metadata already on ICP: 1 matched, 1 created
	flag("images", "stored_on_icp", c, &yes)
	e.edge(edge{memoryID: c, memoryType: "image", artifact: "metadata", backend: "icp-canister", present: true})
	d := e.memory("images", "https://blob/d", 4) // metadata edge says failed: 1 conflicted, 1 created
	flag("images", "stored_on_icp", d, &yes)
	e.edge(edge{memoryID: d, memoryType: "image", artifact: "metadata", backend: "icp-canister", state: "failed"})
	x := e.memory("images", "https://blob/x", 5) // not flagged
	flag("images", "stored_on_icp", x, &no)
	e.memory("images", "https://blob/y", 6) // NULL flag
	n := e.memory("notes", "", 0)           // flagged note: 1 created
	flag("notes", "on_icp", n, &yes)
	e.memory("notes", "", 0)

	cols := []LegacyColumn{{Table: "images", Column: "stored_on_icp"}, {Table: "notes", Column: "on_icp"}}
	before := e.checksum()
	dry, err := s.ImportLegacy(ctx, cols, true)
	if err != nil {
		t.Fatal(err)
	}
	if e.checksum() != before {
		t.Error("a dry import changed storage_edges")
	}
	if !dry.DryRun || dry.Matched != 1 || dry.Created != 6 || dry.Conflicted != 1 || len(dry.Tables) != 2 {
		t.Fatalf("dry report = %+v", dry)
	}
	img := dry.Tables[0]
	if img.Flagged != 4 || img.Created != 5 || img.MemoryType != "image" || len(img.ConflictSamples) != 1 || img.ConflictSamples[0] != d {
		t.Errorf("images = %+v", img)
	}
	if !strings.Contains(dry.Migration, "-- +goose Up\nALTER TABLE \"public\".\"images\" DROP COLUMN \"stored_on_icp\";\nALTER TABLE \"public\".\"notes\" DROP COLUMN \"on_icp\";\n") ||
		!strings.Contains(dry.Migration, "-- +goose Down\nALTER TABLE \"public\".\"images\" ADD COLUMN \"stored_on_icp\" boolean DEFAULT false;\n") {
		t.Errorf("migration:\n%s", dry.Migration)
	}

	rep, err := s.ImportLegacy(ctx, cols, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Matched != 1 || rep.Created != 6 || rep.Conflicted != 1 {
		t.Errorf("import = %+v", rep)
	}
	if n := e.int(`SELECT count(*) FROM storage_edges WHERE backend = 'icp-canister' AND present AND sync_state = 'idle' AND content_hash IS NULL`); n != 7 {
		t.Errorf("%d present icp edges, want 7 (6 created, 1 matched)", n)
	}
	if n := e.int(`SELECT count(*) FROM storage_edges WHERE backend = 'icp-canister' AND memory_id = $1::text::uuid`, x); n != 0 {
		t.Error("an unflagged row got icp edges")
	}
	if st := e.str(`SELECT sync_state::text FROM storage_edges WHERE memory_id = $1::text::uuid AND backend = 'icp-canister' AND artifact = 'metadata'`, d); st != "failed" {
		t.Errorf("a conflicting edge was changed to %s", st)
	}

	again, err := s.ImportLegacy(ctx, cols, false)
	if err != nil {
		t.Fatal(err)
	}
	if again.Matched != 7 || again.Created != 0 || again.Conflicted != 1 {
		t.Errorf("second import = %+v, want 7 matched, 0 created, 1 conflicted", again)
	}
	// Reconcile leaves imported icp edges alone.
	run, err := s.RunNow(ctx, TriggerCLI, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := e.int(`SELECT count(*) FROM storage_edges WHERE backend = 'icp-canister'`); n != 8 || run.Report.Orphans != 0 {
		t.Errorf("after a run: %d icp edges, report %+v", n, run.Report)
	}

	// The migration applies, and its down restores the flags from the edges.
	up, down, _ := strings.Cut(rep.Migration, "-- +goose Down")
	e.exec(up)
	if n := e.int(`SELECT count(*) FROM information_schema.columns WHERE column_name IN ('stored_on_icp', 'on_icp')`); n != 0 {
		t.Errorf("%d legacy columns left after the up", n)
	}
	e.exec(down)
	if got := e.int(`SELECT count(*) FROM images WHERE stored_on_icp`); got != 3 { // a, b, c (d's edge is failed, not present)
		t.Errorf("down restored %d flags, want 3", got)
	}
	if got := e.int(`SELECT count(*) FROM notes WHERE on_icp`); got != 1 {
		t.Errorf("down restored %d note flags, want 1", got)
	}
}

func TestService_ImportLegacy_Errors(t *testing.T) {
	e := newEnv(t)
	s := e.service(nil)
	ctx := context.Background()
	for name, cols := range map[string][]LegacyColumn{
		"none":          nil,
		"unknown table": {{Table: "photos", Column: "on_icp"}},
		"bad column":    {{Table: "images", Column: "x; DROP TABLE images"}},
		"missing col":   {{Table: "images", Column: "no_such_column"}},
	} {
		if _, err := s.ImportLegacy(ctx, cols, true); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// The lock was released each time.
	if _, err := s.RunNow(ctx, TriggerCLI, true, nil); err != nil {
		t.Error(err)
	}
}

// fakeICP answers from a map; memories not in it are not on the canister.
type fakeICP struct {
	mu    sync.Mutex
	held  map[string]ICPStatus
	asked []string
	fail  bool
}

func (f *fakeICP) Status(_ context.Context, id string) (ICPStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, id)
	if f.fail {
		return ICPStatus{}, errors.New("replica unreachable")
	}
	return f.held[id], nil
}

var _ ICPChecker = (*fakeICP)(nil)

func TestService_ICPDrift(t *testing.T) {
	e := newEnv(t)
	icp := &fakeICP{held: map[string]ICPStatus{}}
	s := e.service(func(c *Config) { c.ICP, c.ICPBatch = icp, 2 })
	ctx := context.Background()
	icpEdge := func(id, artifact, hash string, size int64) {
		e.edge(edge{memoryID: id, memoryType: "image", artifact: artifact, backend: "icp-canister", present: true, size: size})
		if hash != "" {
			e.exec(`UPDATE storage_edges SET content_hash = $2 WHERE memory_id = $1::text::uuid AND artifact = $3::text::artifact_t AND backend = 'icp-canister'`, id, hash, artifact)
		}
	}
	var ids []string
	for i := range 5 {
		id := e.memory("images", "https://blob/i", 10)
		e.web2(id, "image", "https://blob/i", 10)
		icpEdge(id, "metadata", "m", 0)
		icpEdge(id, "asset", "h", 10)
		ids = append(ids, id)
		if i < 3 {
			icp.held[id] = ICPStatus{Metadata: ICPObject{Present: true, Hash: "m"}, Asset: ICPObject{Present: true, Hash: "h", Size: 10}}
		}
	}
	icp.held[ids[3]] = ICPStatus{Metadata: ICPObject{Present: true, Hash: "m"}, Asset: ICPObject{Present: true, Hash: "other", Size: 10}} // 1
	// ids[4] is not on the canister at all: 2

	// Batches of 2 memories: three runs cover all five.
	var total int64
	for range 3 {
		run, err := s.RunNow(ctx, TriggerCLI, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		total += run.Report.ICPDrift
	}
	if total != 3 {
		t.Errorf("icp_drift over three runs = %d, want 3", total)
	}
	if n := e.int(`SELECT count(*) FROM storage_edges WHERE backend = 'icp-canister' AND NOT present AND sync_state = 'migrating' AND sync_error LIKE 'the canister disagrees%'`); n != 3 {
		t.Errorf("%d icp edges set back to migrating, want 3", n)
	}
	if len(icp.asked) != 5 {
		t.Errorf("asked about %d memories, want 5", len(icp.asked))
	}

	icp.fail = true
	if _, err := s.RunNow(ctx, TriggerCLI, false, nil); err != nil {
		t.Errorf("an unreachable canister failed the run: %v", err)
	}
}
