package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgesync/edgesync/internal/natstest"
)

// seedMissing creates n images without edges and returns how many edges they
// need (2 each).
func seedMissing(e *env, n int) int64 {
	e.exec(`INSERT INTO images (owner_id, url, size_bytes)
		SELECT gen_random_uuid(), 'https://blob/' || g, g FROM generate_series(1, $1::int) g`, n)
	return int64(2 * n)
}

func TestService_Start(t *testing.T) {
	t.Run("two at once: one run, one ErrAlreadyRunning", func(t *testing.T) {
		e := newEnv(t)
		s := e.service(nil)
		release := make(chan struct{})
		s.beforeWork = func(Run) { <-release }
		ctx := context.Background()

		var wg sync.WaitGroup
		ids := make([]string, 2)
		errs := make([]error, 2)
		start := make(chan struct{})
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ids[i], errs[i] = s.Start(ctx, TriggerHTTP, false)
			}()
		}
		close(start)
		wg.Wait()
		close(release)
		var started []string
		var refused int
		for i := range 2 {
			switch {
			case errs[i] == nil:
				started = append(started, ids[i])
			case errors.Is(errs[i], ErrAlreadyRunning):
				refused++
			default:
				t.Fatal(errs[i])
			}
		}
		if len(started) != 1 || refused != 1 {
			t.Fatalf("started %v, refused %d; want one of each", started, refused)
		}
		poll(t, "the run to finish", func() bool {
			r, err := s.Get(ctx, started[0])
			return err == nil && r.State == "done"
		})
		if n := e.int(`SELECT count(*) FROM reconcile_runs`); n != 1 {
			t.Errorf("%d runs recorded, want 1", n)
		}
	})

	t.Run("another process holds the lock", func(t *testing.T) {
		e := newEnv(t)
		a, b := e.service(nil), e.service(nil)
		release, holding := make(chan struct{}), make(chan struct{})
		a.beforeWork = func(Run) { close(holding); <-release }
		ctx := context.Background()
		done := make(chan error, 1)
		go func() { _, err := a.RunNow(ctx, TriggerCLI, false, nil); done <- err }()
		<-holding
		if _, err := b.Start(ctx, TriggerHTTP, true); !errors.Is(err, ErrAlreadyRunning) {
			t.Errorf("Start while another process runs: %v, want ErrAlreadyRunning", err)
		}
		if _, err := b.RunNow(ctx, TriggerCLI, true, nil); !errors.Is(err, ErrAlreadyRunning) {
			t.Errorf("RunNow while another process runs: %v, want ErrAlreadyRunning", err)
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if _, err := b.RunNow(ctx, TriggerCLI, true, nil); err != nil {
			t.Errorf("RunNow after the other run ended: %v", err)
		}
	})

	t.Run("runs on after the caller's context ends", func(t *testing.T) {
		e := newEnv(t)
		s := e.service(func(c *Config) { c.ChunkSize = 5 })
		want := seedMissing(e, 40)
		ctx, cancel := context.WithCancel(context.Background())
		id, err := s.Start(ctx, TriggerHTTP, false)
		cancel() // an HTTP handler returns right after Start
		if err != nil {
			t.Fatal(err)
		}
		poll(t, "the run to finish", func() bool {
			r, err := s.Get(context.Background(), id)
			return err == nil && r.State != "running"
		})
		r, _ := s.Get(context.Background(), id)
		if r.State != "done" || r.Report.Missing != want {
			t.Errorf("run = %+v, report %+v", r, r.Report)
		}
	})

	t.Run("Wait cancels a run at shutdown", func(t *testing.T) {
		e := newEnv(t)
		s := e.service(nil)
		holding := make(chan struct{})
		s.beforeWork = func(Run) {
			close(holding)
			<-s.bg.Done() // a long run, until shutdown
		}
		id, err := s.Start(context.Background(), TriggerHTTP, false)
		if err != nil {
			t.Fatal(err)
		}
		<-holding
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := s.Wait(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Wait = %v, want context.Canceled", err)
		}
		r, err := s.Get(context.Background(), id)
		if err != nil || r.State != "error" || !strings.HasPrefix(r.Error, "cancelled") {
			t.Errorf("run after shutdown = %+v (%v)", r, err)
		}
		if _, err := s.Start(context.Background(), TriggerHTTP, false); !errors.Is(err, ErrShuttingDown) {
			t.Errorf("Start after Wait = %v, want ErrShuttingDown", err)
		}
	})
}

func TestService_RunNow_Cancelled(t *testing.T) {
	e := newEnv(t)
	s := e.service(func(c *Config) { c.ChunkSize = 3 })
	want := seedMissing(e, 30)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first, err := s.RunNow(ctx, TriggerCLI, false, func(done, total int64) { cancel() })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: %v, want context.Canceled", err)
	}
	if first.State != "error" || !strings.HasPrefix(first.Error, "cancelled") {
		t.Errorf("cancelled run = %+v", first)
	}
	rec, err := s.Get(context.Background(), first.ID)
	if err != nil || rec.State != "error" || rec.FinishedAt == nil {
		t.Errorf("recorded cancelled run = %+v (%v)", rec, err)
	}
	if first.Report.Missing == 0 || first.Report.Missing >= want {
		t.Errorf("cancelled after the first chunk, yet it created %d of %d edges", first.Report.Missing, want)
	}
	// What exists is right (each chunk commits whole), and the lock is free.
	if n := e.int(`SELECT count(*) FROM storage_edges e JOIN images m ON m.id = e.memory_id
		WHERE e.artifact = 'asset' AND (e.location IS DISTINCT FROM m.url OR e.size_bytes IS DISTINCT FROM m.size_bytes)`); n != 0 {
		t.Errorf("%d half-made edges", n)
	}
	next, err := s.RunNow(context.Background(), TriggerCLI, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first.Report.Missing+next.Report.Missing != want {
		t.Errorf("created %d + %d edges, want %d in all", first.Report.Missing, next.Report.Missing, want)
	}
	if v := e.ruleViolations(); v != 0 {
		t.Errorf("%d edges break the rule", v)
	}
}

func TestService_RunEvery(t *testing.T) {
	e := newEnv(t)
	s := e.service(nil)
	seedMissing(e, 3)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.RunEvery(ctx, 20*time.Millisecond) }()
	poll(t, "two scheduled runs", func() bool {
		return e.int(`SELECT count(*) FROM reconcile_runs WHERE trigger = 'schedule' AND state = 'done'`) >= 2
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("RunEvery = %v, want nil after ctx ends", err)
	}
	if v := e.ruleViolations(); v != 0 {
		t.Errorf("%d edges break the rule", v)
	}

	t.Run("0 is off", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.RunEvery(ctx, 0) }()
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

func TestService_ServeNATS(t *testing.T) {
	e := newEnv(t)
	s := e.service(func(c *Config) { c.SubjectPrefix = "es" })
	srv := natstest.Start(t)
	nc := srv.Conn(t)
	release := make(chan struct{})
	var block atomic.Bool
	s.beforeWork = func(Run) {
		if block.Load() {
			<-release
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.ServeNATS(ctx, nc, "") }()

	request := func(body string) natsReply {
		t.Helper()
		var msg *nats.Msg
		poll(t, "a reply on es.admin.reconcile", func() bool {
			var err error
			msg, err = nc.Request("es.admin.reconcile", []byte(body), 2*time.Second)
			return err == nil
		})
		var r natsReply
		if err := json.Unmarshal(msg.Data, &r); err != nil {
			t.Fatalf("reply %q: %v", msg.Data, err)
		}
		return r
	}
	wait := func(id string) Run {
		t.Helper()
		var r Run
		poll(t, "run "+id, func() bool {
			var err error
			r, err = s.Get(context.Background(), id)
			return err == nil && r.State != "running"
		})
		return r
	}

	r := request(`{"dry_run": true}`)
	if r.Status != "started" || r.RunID == "" {
		t.Fatalf("reply = %+v", r)
	}
	if run := wait(r.RunID); !run.DryRun || run.Trigger != "nats" || run.State != "done" {
		t.Errorf("run = %+v", run)
	}
	r = request(``)
	if run := wait(r.RunID); run.DryRun {
		t.Error("an empty request started a dry run")
	}
	if r := request(`{"dry_run": yes}`); r.Code != "bad_request" || r.Error == "" || strings.Contains(r.Error, "invalid character") {
		t.Errorf("bad JSON reply = %+v (want fixed words, not the decoder's message)", r)
	}

	block.Store(true)
	first := request(`{}`)
	if second := request(`{}`); second.Code != "already_running" || second.Error != "a reconcile run is already running" {
		t.Errorf("reply while running = %+v", second)
	}
	close(release)
	wait(first.RunID)

	// A failure inside (here the runs table is gone) is answered without
	// its internals: no table name, no SQL state, no driver text.
	e.exec(`ALTER TABLE reconcile_runs RENAME TO reconcile_runs_hidden`)
	if r := request(`{}`); r.Code != "internal" || r.Error == "" ||
		strings.Contains(r.Error, "reconcile_runs") || strings.Contains(r.Error, "SQLSTATE") || strings.Contains(r.Error, "relation") {
		t.Errorf("reply to a failing start = %+v", r)
	}
	e.exec(`ALTER TABLE reconcile_runs_hidden RENAME TO reconcile_runs`)

	cancel()
	if err := <-served; err != nil {
		t.Errorf("ServeNATS = %v", err)
	}
}

// TestService_RunNow_ConcurrentWrites races a run against writers that
// behave like the app and the CDC pipeline (row change, then the edge write
// in its own transaction) and against random damage. After the writers stop
// and one more run, the edges must be exactly what the rule says.
func TestService_RunNow_ConcurrentWrites(t *testing.T) {
	e := newEnv(t)
	s := e.service(func(c *Config) { c.ChunkSize = 10 })
	e.exec(`INSERT INTO images (owner_id, url, size_bytes) SELECT gen_random_uuid(), 'https://blob/' || g, g FROM generate_series(1, 300) g`)
	e.exec(`INSERT INTO notes (owner_id) SELECT gen_random_uuid() FROM generate_series(1, 100)`)
	if _, err := s.RunNow(context.Background(), TriggerCLI, false, nil); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes atomic.Int64
	writer := func(seed int64) {
		defer wg.Done()
		rng := rand.New(rand.NewSource(seed))
		ex := func(sql string, args ...any) {
			if _, err := e.pool.Exec(ctx, sql, args...); err != nil {
				t.Errorf("%s: %v", sql, err)
			}
		}
		for {
			select {
			case <-stop:
				return
			default:
			}
			writes.Add(1)
			switch rng.Intn(6) {
			case 0: // insert, then the pipeline's edges
				var id string
				url := fmt.Sprintf("https://blob/new-%d", rng.Int63())
				if err := e.pool.QueryRow(ctx, `INSERT INTO images (owner_id, url, size_bytes) VALUES (gen_random_uuid(), $1, 7) RETURNING id::text`, url).Scan(&id); err != nil {
					t.Error(err)
					return
				}
				ex(`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, location, size_bytes)
					VALUES ($1::text::uuid, 'image', 'metadata', 'neon-db', true, NULL, NULL), ($1::text::uuid, 'image', 'asset', 'vercel-blob', true, $2, 7)
					ON CONFLICT ON CONSTRAINT storage_edges_key DO UPDATE SET present = EXCLUDED.present, location = EXCLUDED.location, size_bytes = EXCLUDED.size_bytes`, id, url)
			case 1: // URL change (sometimes to null), then the edge follows
				var id string
				var url *string
				if rng.Intn(3) > 0 {
					u := fmt.Sprintf("https://blob/moved-%d", rng.Int63())
					url = &u
				}
				err := e.pool.QueryRow(ctx, `UPDATE images SET url = $1 WHERE id = (SELECT id FROM images ORDER BY random() LIMIT 1) RETURNING id::text`, url).Scan(&id)
				if err != nil {
					continue // the row was deleted meanwhile
				}
				ex(`UPDATE storage_edges SET present = $2::text IS NOT NULL, location = $2 WHERE memory_id = $1::text::uuid AND artifact = 'asset' AND backend = 'vercel-blob'`, id, url)
			case 2: // delete, then the edges go
				var id string
				if err := e.pool.QueryRow(ctx, `DELETE FROM images WHERE id = (SELECT id FROM images ORDER BY random() LIMIT 1) RETURNING id::text`).Scan(&id); err != nil {
					continue
				}
				ex(`DELETE FROM storage_edges WHERE memory_id = $1::text::uuid AND backend <> 'icp-canister'`, id)
			case 3: // damage: a lost edge
				ex(`DELETE FROM storage_edges WHERE id = (SELECT id FROM storage_edges ORDER BY random() LIMIT 1)`)
			case 4: // damage: drift
				ex(`UPDATE storage_edges SET location = 'https://blob/wrong' WHERE id = (SELECT id FROM storage_edges WHERE artifact = 'asset' ORDER BY random() LIMIT 1)`)
			case 5: // damage: a note deleted behind the pipeline's back
				ex(`DELETE FROM notes WHERE id = (SELECT id FROM notes ORDER BY random() LIMIT 1)`)
			}
		}
	}
	for i := range 3 {
		wg.Add(1)
		go writer(int64(i + 1))
	}
	run, err := s.RunNow(ctx, TriggerCLI, false, nil)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("run during writes: %v", err)
	}
	if run.Report.Fixed == 0 || writes.Load() < 10 {
		t.Logf("run %+v with %d concurrent writes", run.Report, writes.Load())
	}
	if _, err := s.RunNow(ctx, TriggerCLI, false, nil); err != nil {
		t.Fatal(err)
	}
	if v := e.ruleViolations(); v != 0 {
		t.Errorf("%d edges break the rule after the final pass (%d concurrent writes)", v, writes.Load())
	}
	again, err := s.RunNow(ctx, TriggerCLI, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantReport(t, again.Report, Report{DryRun: true})
}
