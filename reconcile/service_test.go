package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgesync/edgesync/domain"
	dto "github.com/prometheus/client_model/go"
)

// damage seeds one case of every kind a run finds and returns what to check
// afterwards. The counts in the comments add up to the expected reports.
type damaged struct {
	deletedImage, deletedNote string // orphans whose icp edges the policy decides about
	stuckRetry, stuckGiveUp   string // image ids with stuck icp metadata edges
	stuckNoRow, stuckRecent   string
	failedDue, failedLater    string
	failedSpent               string
}

func seedDamage(e *env) damaged {
	var d damaged
	hour := time.Hour
	old := 2 * time.Minute // older than StuckAfter (1m)

	// Healthy rows, one per kind of table.
	i1 := e.memory("images", "https://blob/i1", 100)
	e.web2(i1, "image", "https://blob/i1", 100)
	n1 := e.memory("notes", "", 0)
	e.web2(n1, "note", "", 0)
	i8 := e.memory("images", "", 0) // no URL, no blob edge: nothing missing
	e.web2(i8, "image", "", 0)
	i9 := e.memory("images", "", 0) // no URL, blob edge not present: fine
	e.web2(i9, "image", "", 0)
	e.edge(edge{memoryID: i9, memoryType: "image", artifact: "asset", backend: "vercel-blob", present: false, size: 5})

	// missing: 5 edges
	i2 := e.memory("images", "https://blob/i2", 200) // no metadata edge (1)
	e.edge(edge{memoryID: i2, memoryType: "image", artifact: "asset", backend: "vercel-blob", present: true, location: "https://blob/i2", size: 200})
	i3 := e.memory("images", "https://blob/i3", 300) // no blob edge (1)
	e.edge(edge{memoryID: i3, memoryType: "image", artifact: "metadata", backend: "neon-db", present: true})
	e.memory("videos", "https://blob/v11", 1100) // no edges at all (2)
	e.memory("notes", "", 0)                     // no metadata edge (1)

	// drift: 5 edges
	i4 := e.memory("images", "https://blob/i4", 400) // location
	e.edge(edge{memoryID: i4, memoryType: "image", artifact: "metadata", backend: "neon-db", present: true})
	e.edge(edge{memoryID: i4, memoryType: "image", artifact: "asset", backend: "vercel-blob", present: true, location: "https://blob/OLD", size: 400})
	i5 := e.memory("images", "https://blob/i5", 500) // presence
	e.edge(edge{memoryID: i5, memoryType: "image", artifact: "metadata", backend: "neon-db", present: true})
	e.edge(edge{memoryID: i5, memoryType: "image", artifact: "asset", backend: "vercel-blob", present: false, location: "https://blob/i5", size: 500})
	i6 := e.memory("documents", "https://blob/d6", 600) // size
	e.web2(i6, "document", "https://blob/d6", 999)
	i7 := e.memory("audio", "", 0) // URL gone, blob edge still present
	e.web2(i7, "audio", "https://blob/a7", 700)
	i10 := e.memory("images", "https://blob/i10", 1000) // metadata not present
	e.edge(edge{memoryID: i10, memoryType: "image", artifact: "metadata", backend: "neon-db", present: false})
	e.edge(edge{memoryID: i10, memoryType: "image", artifact: "asset", backend: "vercel-blob", present: true, location: "https://blob/i10", size: 1000})

	// orphans: 4 with policy keep, 6 with delete
	d.deletedImage = e.str(`SELECT gen_random_uuid()::text`)
	e.web2(d.deletedImage, "image", "https://blob/gone", 1)                                                                   // 2
	e.edge(edge{memoryID: d.deletedImage, memoryType: "image", artifact: "metadata", backend: "icp-canister", present: true}) // +1 delete
	d.deletedNote = e.str(`SELECT gen_random_uuid()::text`)
	e.web2(d.deletedNote, "note", "", 0)                                                                                    // 1
	e.edge(edge{memoryID: d.deletedNote, memoryType: "note", artifact: "metadata", backend: "icp-canister", present: true}) // +1 delete
	e.web2(e.str(`SELECT gen_random_uuid()::text`), "video", "", 0)                                                         // 1

	// stuck: 3 (icp edges of live memories, so the policy plays no part)
	icp := func(id, mt, state string, age time.Duration) {
		e.edge(edge{memoryID: id, memoryType: mt, artifact: "metadata", backend: "icp-canister", state: state, age: age})
	}
	d.stuckRetry, d.stuckGiveUp, d.stuckNoRow, d.stuckRecent = i1, i2, i4, i3
	icp(i1, "image", "migrating", old) // retried, attempts 1 -> 2
	e.attempts(i1, "image", 1, "timeout", -hour)
	icp(i2, "image", "migrating", old) // attempts spent: failed
	e.attempts(i2, "image", 3, "upload chunk 3: canister rejected the message", -hour)
	icp(i4, "image", "migrating", old)         // retried, no attempts row yet
	icp(i3, "image", "migrating", time.Second) // recent: not stuck

	// failed: 1 due
	d.failedDue, d.failedLater, d.failedSpent = i5, i6, n1
	icp(i5, "image", "failed", 0)
	e.attempts(i5, "image", 1, "boundary node unreachable", -time.Minute)
	e.exec(`UPDATE storage_edges SET sync_error = 'boundary node unreachable' WHERE memory_id = $1::text::uuid AND backend = 'icp-canister'`, i5)
	icp(i6, "document", "failed", 0)
	e.exec(`INSERT INTO sync_attempts (memory_id, memory_type, backend, attempts, next_attempt_at) VALUES ($1::text::uuid, 'document', 'icp-canister', 1, now() + interval '1 hour')`, i6)
	icp(n1, "note", "failed", 0)
	// The mirror spent every round: no next attempt.
	e.exec(`INSERT INTO sync_attempts (memory_id, memory_type, backend, attempts, rounds, next_attempt_at) VALUES ($1::text::uuid, 'note', 'icp-canister', 3, 10, NULL)`, n1)
	return d
}

func TestService_RunNow(t *testing.T) {
	for _, tc := range []struct {
		policy  string
		chunk   int
		orphans int64
	}{
		{PolicyKeep, 1000, 4},
		{PolicyKeep, 1, 4},
		{PolicyKeep, 3, 4},
		{PolicyDelete, 2, 6},
	} {
		t.Run(fmt.Sprintf("%s/chunk=%d", tc.policy, tc.chunk), func(t *testing.T) {
			e := newEnv(t)
			var published []string
			var mu sync.Mutex
			s := e.service(func(c *Config) {
				c.ICPEdgesOnDelete, c.ChunkSize = tc.policy, tc.chunk
				c.Publish = func(_ context.Context, subject, _ string, data []byte) error {
					mu.Lock()
					defer mu.Unlock()
					published = append(published, subject+" "+string(data))
					return nil
				}
			})
			d := seedDamage(e)
			ctx := context.Background()
			found := Report{Orphans: tc.orphans, Missing: 5, Drift: 5, Stuck: 3, FailedRetried: 1}

			before := e.checksum()
			var calls int
			run, err := s.RunNow(ctx, TriggerCLI, true, func(done, total int64) {
				calls++
				if done > total {
					t.Errorf("progress %d of %d", done, total)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			dry := found
			dry.DryRun = true
			wantReport(t, run.Report, dry)
			if after := e.checksum(); after != before {
				t.Error("a dry run changed storage_edges or sync_attempts")
			}
			if run.State != "done" || run.FinishedAt == nil || !run.DryRun || run.Trigger != "cli" {
				t.Errorf("run = %+v", run)
			}
			if calls == 0 {
				t.Error("progress was never called")
			}
			if got := run.Report.ByType["image"]; got == nil || got.Missing != 2 || got.Drift != 3 {
				t.Errorf("by_type image = %+v, want missing 2 drift 3", got)
			}

			run, err = s.RunNow(ctx, TriggerCLI, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			fixed := found
			fixed.Fixed = tc.orphans + 5 + 5 + 3 + 1
			wantReport(t, run.Report, fixed)
			if v := e.ruleViolations(); v != 0 {
				t.Errorf("%d edges break the rule after the repair", v)
			}

			// The ICP policy.
			kept := e.int(`SELECT count(*) FROM storage_edges WHERE backend = 'icp-canister' AND memory_id IN ($1::text::uuid, $2::text::uuid)`, d.deletedImage, d.deletedNote)
			if wantKept := map[string]int64{PolicyKeep: 2, PolicyDelete: 0}[tc.policy]; kept != wantKept {
				t.Errorf("icp edges of deleted memories = %d, want %d under %s", kept, wantKept, tc.policy)
			}
			// Stuck syncs.
			state := func(id string) string {
				return e.str(`SELECT sync_state::text FROM storage_edges WHERE memory_id = $1::text::uuid AND backend = 'icp-canister'`, id)
			}
			attempts := func(id string) int64 {
				return e.int(`SELECT coalesce((SELECT attempts FROM sync_attempts WHERE memory_id = $1::text::uuid), -1)::bigint`, id)
			}
			if state(d.stuckRetry) != "migrating" || attempts(d.stuckRetry) != 2 {
				t.Errorf("stuck retry: state %s attempts %d, want migrating 2", state(d.stuckRetry), attempts(d.stuckRetry))
			}
			if age := e.int(`SELECT extract(epoch FROM now() - updated_at)::bigint FROM storage_edges WHERE memory_id = $1::text::uuid AND backend = 'icp-canister'`, d.stuckRetry); age > 30 {
				t.Errorf("a retried stuck edge was not touched (%ds old)", age)
			}
			if state(d.stuckNoRow) != "migrating" || attempts(d.stuckNoRow) != 1 {
				t.Errorf("stuck without attempts: state %s attempts %d, want migrating 1", state(d.stuckNoRow), attempts(d.stuckNoRow))
			}
			if state(d.stuckGiveUp) != "failed" {
				t.Errorf("stuck with spent attempts: state %s, want failed", state(d.stuckGiveUp))
			}
			msg := e.str(`SELECT sync_error FROM storage_edges WHERE memory_id = $1::text::uuid AND backend = 'icp-canister'`, d.stuckGiveUp)
			if !strings.HasPrefix(msg, "gave up after 3 attempts: upload chunk 3: canister rejected the message; ") || !strings.Contains(msg, "store-forever") {
				t.Errorf("sync_error = %q", msg)
			}
			if next := e.str(`SELECT next_attempt_at::text FROM sync_attempts WHERE memory_id = $1::text::uuid`, d.stuckGiveUp); next != "<null>" {
				t.Errorf("a given-up sync keeps next_attempt_at %s", next)
			}
			if state(d.stuckRecent) != "migrating" || attempts(d.stuckRecent) != -1 {
				t.Error("a recent migrating edge was touched")
			}
			// Failed syncs.
			if state(d.failedDue) != "migrating" {
				t.Errorf("due failed sync: state %s, want migrating", state(d.failedDue))
			}
			if msg := e.str(`SELECT sync_error FROM storage_edges WHERE memory_id = $1::text::uuid AND backend = 'icp-canister'`, d.failedDue); msg != "boundary node unreachable" {
				t.Errorf("a retried sync lost its error: %q", msg)
			}
			if state(d.failedLater) != "failed" || state(d.failedSpent) != "failed" {
				t.Error("a failed sync not yet due (or with its rounds spent) was retried")
			}
			// A retried sync starts a new round: its attempts count from 0 again, and it is not due
			// again until the mirror schedules another round.
			if a, next := attempts(d.failedDue), e.str(`SELECT next_attempt_at::text FROM sync_attempts WHERE memory_id = $1::text::uuid`, d.failedDue); a != 0 || next != "<null>" {
				t.Errorf("retried sync: attempts %d next %s; want 0 and none", a, next)
			}

			run, err = s.RunNow(ctx, TriggerCLI, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			wantReport(t, run.Report, Report{})

			got, err := s.Get(ctx, run.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.State != "done" || got.Report == nil || got.Report.Fixed != 0 || got.FinishedAt == nil {
				t.Errorf("Get = %+v", got)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(published) != 3 || !strings.HasPrefix(published[1], "edgesync.reconcile.completed {") {
				t.Fatalf("published %q", published)
			}
			var ev Run
			if err := json.Unmarshal([]byte(strings.TrimPrefix(published[1], "edgesync.reconcile.completed ")), &ev); err != nil || ev.Report == nil || ev.Report.Fixed != fixed.Fixed {
				t.Errorf("completion event %q (%v)", published[1], err)
			}
		})
	}
}

func TestService_Metrics(t *testing.T) {
	e := newEnv(t)
	s := e.service(nil)
	seedDamage(e)
	if _, err := s.RunNow(context.Background(), TriggerCLI, true, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RunNow(context.Background(), TriggerCLI, false, nil); err != nil {
		t.Fatal(err)
	}
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName() + labels(m)
			switch {
			case m.Counter != nil:
				got[key] = m.Counter.GetValue()
			case m.Histogram != nil:
				got[key] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	for k, v := range map[string]float64{
		`edgesync_reconcile_runs_total{result="dry_run"}`:  1,
		`edgesync_reconcile_runs_total{result="ok"}`:       1,
		`edgesync_reconcile_runs_total{result="error"}`:    0,
		`edgesync_reconcile_found_total{kind="orphans"}`:   8,
		`edgesync_reconcile_found_total{kind="missing"}`:   10,
		`edgesync_reconcile_found_total{kind="icp_drift"}`: 0,
		`edgesync_reconcile_duration_seconds`:              2,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func labels(m *dto.Metric) string {
	if len(m.GetLabel()) == 0 {
		return ""
	}
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func TestService_Get(t *testing.T) {
	e := newEnv(t)
	s := e.service(nil)
	ctx := context.Background()
	if _, err := s.Get(ctx, "not-a-uuid"); !errors.Is(err, ErrBadRunID) {
		t.Errorf("bad id: %v, want ErrBadRunID", err)
	}
	if _, err := s.Get(ctx, "7d3c1a52-3b8e-4f0a-9c57-0a2b9e4c1d11"); !errors.Is(err, ErrRunNotFound) {
		t.Errorf("unknown id: %v, want ErrRunNotFound", err)
	}
}

func TestService_New_BadConfig(t *testing.T) {
	e := newEnv(t)
	s := e.service(func(c *Config) {
		c.Tables = []domain.Table{{Name: `images"; DROP TABLE storage_edges; --`, MemoryType: "image"}}
		c.ICPEdgesOnDelete = "sometimes"
	})
	_, err := s.RunNow(context.Background(), TriggerCLI, true, nil)
	if err == nil || !strings.Contains(err.Error(), "not a valid table name") || !strings.Contains(err.Error(), "icp_edges_on_delete") {
		t.Errorf("err = %v", err)
	}
	if n := e.int(`SELECT count(*) FROM reconcile_runs`); n != 0 {
		t.Errorf("%d runs recorded for a bad configuration", n)
	}
}

func TestService_RunNow_SchemaQualifiedAndCustomColumns(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE SCHEMA app`)
	e.exec(`CREATE TABLE app.photos (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), blob_url text)`)
	s := e.service(func(c *Config) {
		c.Tables = []domain.Table{{Name: "app.photos", MemoryType: "image", URLColumn: "blob_url"}}
	})
	e.exec(`INSERT INTO app.photos (blob_url) VALUES ('https://blob/p1'), (NULL)`)
	run, err := s.RunNow(context.Background(), TriggerCLI, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantReport(t, run.Report, Report{Missing: 3, Fixed: 3})
	if n := e.int(`SELECT count(*) FROM storage_edges WHERE location = 'https://blob/p1' AND size_bytes IS NULL`); n != 1 {
		t.Errorf("blob edge without a size column: %d", n)
	}
}

// TestRun_CompletionRetriedWithOneMsgID: a publish that fails (a NATS
// failover) is retried with the same msg id, so the report is not lost and
// JetStream stores it once.
func TestRun_CompletionRetriedWithOneMsgID(t *testing.T) {
	e := newEnv(t)
	var ids []string
	s := e.service(func(c *Config) {
		c.PublishFor = 10 * time.Second
		c.Publish = func(_ context.Context, subject, msgID string, data []byte) error {
			ids = append(ids, msgID)
			if len(ids) < 3 {
				return errors.New("nats: no responders available for request")
			}
			if !strings.HasSuffix(subject, ".reconcile.completed") || !strings.Contains(string(data), `"report"`) {
				t.Errorf("published %s %s", subject, data)
			}
			return nil
		}
	})
	run, err := s.RunNow(context.Background(), TriggerCLI, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 3 {
		t.Fatalf("%d publish attempts, want 3 (two failures, then stored)", len(ids))
	}
	for _, id := range ids {
		if id != "reconcile/"+run.ID+"/completed" {
			t.Errorf("msg id %q, want one id per run", id)
		}
	}
}

func TestService_List(t *testing.T) {
	e := newEnv(t)
	s := e.service(nil)
	ctx := context.Background()
	runs, err := s.List(ctx, 10)
	if err != nil || len(runs) != 0 {
		t.Fatalf("no runs yet: %v, %v", runs, err)
	}
	first, err := s.RunNow(ctx, TriggerCLI, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.RunNow(ctx, TriggerHTTP, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	runs, err = s.List(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[0].ID != second.ID || runs[1].ID != first.ID {
		t.Fatalf("runs %+v, want %s then %s (newest first)", runs, second.ID, first.ID)
	}
	if r := runs[1]; !r.DryRun || r.Trigger != TriggerCLI || r.State != "done" || r.Report == nil || !r.Report.DryRun || r.FinishedAt == nil {
		t.Errorf("first run as listed: %+v", r)
	}
	if got, err := s.Get(ctx, first.ID); err != nil || got.ID != first.ID || got.Report == nil {
		t.Errorf("Get after List: %+v, %v", got, err)
	}
	if runs, err = s.List(ctx, 1); err != nil || len(runs) != 1 || runs[0].ID != second.ID {
		t.Errorf("limit 1: %+v, %v", runs, err)
	}
}
