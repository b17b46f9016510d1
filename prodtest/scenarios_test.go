package prodtest

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// scale is how much a scenario does: small for make test, volume for soak.
type scale struct {
	writers     int           // concurrent writers
	step        int64         // transactions between the phases of a fault
	rounds      int           // how often a repeated fault repeats
	sseClients  int           // idle SSE clients
	readers     int           // presence-reading goroutines of the flood
	floodWindow time.Duration // how long lag is sampled under the flood
	checkWithin time.Duration // how long the pipeline may take to catch up
	pause       time.Duration // each writer's pause between transactions
}

func currentScale() scale {
	if soak {
		return scale{writers: 3, step: 1000, rounds: 3, sseClients: 2000, readers: 32, floodWindow: 30 * time.Second, checkWithin: 5 * time.Minute, pause: 5 * time.Millisecond}
	}
	return scale{writers: 1, step: 60, rounds: 1, sseClients: 500, readers: 8, floodWindow: 8 * time.Second, checkWithin: 90 * time.Second, pause: 10 * time.Millisecond}
}

// outcome is what a scenario adds to the verdict: assertions of its own
// (the leader did not move, lag stayed flat) and notes for the table.
type outcome struct {
	problems []string
	notes    []string
	// rssGoal, when set, is a peak RSS the pods must stay under (through
	// the catch-up after the fault too), tighter than the memory limit.
	rssGoal int64
}

func (o *outcome) fail(format string, args ...any) {
	o.problems = append(o.problems, fmt.Sprintf(format, args...))
}
func (o *outcome) note(format string, args ...any) {
	o.notes = append(o.notes, fmt.Sprintf(format, args...))
}

// scenario is one fault in the production shape.
type scenario struct {
	name string
	// knownDefect names the filed defect that makes the scenario fail against
	// today's code. make test does not run it (and says so); make soak runs it
	// and reports XFAIL instead of failing, or XPASS once it is fixed.
	knownDefect string
	// intermittent: the known defect shows only in some runs (a race of
	// timing), so a pass does not mean it is fixed.
	intermittent bool
	// soakOnly: longer than make test may take (outages beyond the two-minute
	// duplicate window).
	soakOnly bool
	opts     envOptions
	run      func(e *env, sc scale, o *outcome)
}

// runScenario runs s in a fresh environment and checks, afterwards, every
// change exactly once in per-memory commit order and the edges converged.
func runScenario(t *testing.T, s scenario) {
	switch {
	case s.soakOnly && !soak:
		record(row{scenario: s.name, result: "SKIP", notes: "soak only: it outlasts the 2-minute duplicate window"})
		t.Skipf("%s outlasts the stream's %s duplicate window: it runs in `make soak` (EDGESYNC_SOAK=1), not in make test", s.name, dupWindow)
	case s.knownDefect != "" && !soak && !strict:
		record(row{scenario: s.name, result: "SKIP", notes: "known defect: " + s.knownDefect})
		t.Skipf("expected to fail until fixed (%s): it runs in `make soak`, which reports it as XFAIL; EDGESYNC_PRODTEST_STRICT=1 runs it here", s.knownDefect)
	}
	sc := currentScale()
	began := time.Now()
	e := newEnv(t, s.opts)
	ready := time.Now()
	var o outcome
	s.run(e, sc, &o)
	faulted := time.Now()
	v := e.check(sc.checkWithin)
	t.Logf("environment %.1fs, scenario %.1fs, check %.1fs", ready.Sub(began).Seconds(), faulted.Sub(ready).Seconds(), time.Since(faulted).Seconds())
	o.problems = append(o.problems, e.rssProblems()...)
	if peak := e.peakRSS(); o.rssGoal > 0 && peak > o.rssGoal {
		o.fail("peak RSS %s is above the goal of %s", mib(peak), mib(o.rssGoal))
	}
	steps, changes := e.leaders.counts()
	r := row{scenario: s.name, v: v, peakRSS: e.peakRSS(), limit: e.man.memLimit,
		leaders: fmt.Sprintf("%d/%d", steps, changes), notes: strings.Join(o.notes, "; ")}
	failed := !v.ok() || len(o.problems) > 0
	what := v.String()
	if len(o.problems) > 0 {
		what += "; " + strings.Join(o.problems, "; ")
	}
	switch {
	case failed && s.knownDefect != "" && !strict:
		r.result = "XFAIL"
		r.notes = strings.TrimPrefix(r.notes+"; "+s.knownDefect, "; ")
		t.Logf("XFAIL (known defect: %s): %s", s.knownDefect, what)
	case failed:
		r.result = "FAIL"
		t.Errorf("%s: %s", s.name, what)
	case s.knownDefect != "" && s.intermittent:
		r.result = "PASS*"
		r.notes = strings.TrimPrefix(r.notes+"; passed this run, but the known defect shows intermittently: "+s.knownDefect, "; ")
		t.Logf("PASS this run; the known defect (%s) shows in some runs only, so the mark stays", s.knownDefect)
	case s.knownDefect != "":
		r.result = "XPASS"
		t.Logf("XPASS: %s passed although marked with the known defect %q; remove the mark", s.name, s.knownDefect)
	default:
		r.result = "PASS"
		t.Logf("%s: %s", s.name, what)
	}
	record(r)
}

// waitCommits waits until the workload has committed n transactions.
func waitCommits(t testing.TB, ws *writes, n int64) {
	t.Helper()
	eventually(t, 2*time.Minute, fmt.Sprintf("%d committed transactions", n), func() (bool, string) {
		c := ws.commits()
		return c >= n, fmt.Sprintf("%d committed, %d errors", c, ws.w.errors.Load())
	})
}

// TestProd_LeaderKilled kills the leading pod (SIGKILL) under writes; the
// standby takes over and a replacement pod becomes the new standby.
func TestProd_LeaderKilled(t *testing.T) {
	runScenario(t, scenario{name: "leader SIGKILL", run: func(e *env, sc scale, o *outcome) {
		leader, _ := e.startPair()
		ws := startWrites(e.pool, sc.writers, sc.pause, 1, 0)
		defer ws.stop()
		var worst time.Duration
		for i := 0; i < sc.rounds; i++ {
			waitCommits(e.t, ws, ws.commits()+sc.step)
			leader.kill()
			killed := time.Now()
			var next *instance
			eventually(e.t, 60*time.Second, "a standby takes over", func() (bool, string) {
				next = e.currentLeader()
				return next != nil, ""
			})
			if d := time.Since(killed); d > worst {
				worst = d
			}
			e.start() // the ReplicaSet replaces the pod
			leader = next
		}
		waitCommits(e.t, ws, ws.commits()+sc.step)
		ws.stop()
		o.note("%d kill(s), failover ≤ %.1fs (kill → standby reports edgesync_leader 1)", sc.rounds, worst.Seconds())
	}})
}

// TestProd_TwoPipelines runs the tables split over two pipelines as
// docs/scaling.md deploys them: the base manifest's pipeline without notes,
// and the pipeline-b overlay's (its own slot and publication) with notes
// moved to it, each a leader and a standby, one stream. Under writes to
// images and notes, the leader of one pipeline and then of the other is
// killed (a restarting pipeline looks for its replay's stored events while
// the other one keeps filling the stream); every change must be in the
// stream once, in order, published by the pipeline that maps its table.
// (Leaving notes in the base pipeline's tables too, the mistake the overlay
// warns about, fails it: each notes change is stored twice.)
func TestProd_TwoPipelines(t *testing.T) {
	runScenario(t, scenario{name: "two pipelines, each leader killed", run: func(e *env, sc scale, o *outcome) {
		b := pipeline{env: overlayEnv(e.t, "pipeline-b")}
		b.env["EDGESYNC_TABLES"] = "notes=note"
		a := pipeline{env: map[string]string{"EDGESYNC_TABLES": "images=image:url:size_bytes,videos=video:url:size_bytes,documents=document:url:size_bytes,audio=audio:url:size_bytes"}}
		e.startPairIn(a)
		e.startPairIn(b)
		ws := startWrites(e.pool, sc.writers, sc.pause, 11, 0)
		defer ws.stop()
		for i := 0; i < 2*sc.rounds; i++ {
			p := []pipeline{b, a}[i%2]
			waitCommits(e.t, ws, ws.commits()+sc.step)
			leader := e.leaderOf(p.slot())
			if leader == nil {
				e.t.Fatalf("pipeline %s has no leader", p.slot())
			}
			leader.kill()
			eventually(e.t, 60*time.Second, "a standby of "+p.slot()+" takes over", func() (bool, string) {
				return e.leaderOf(p.slot()) != nil, ""
			})
			e.startIn(p) // the ReplicaSet replaces the pod
		}
		waitCommits(e.t, ws, ws.commits()+sc.step)
		ws.stop()
		eventually(e.t, sc.checkWithin, "both slots past the last change", func() (bool, string) {
			return slotPast(context.Background(), e.pool)
		})
		// Each change's events come from the pipeline that maps its table.
		wrong := 0
		for _, m := range readStream(e.t, e.js, e.nats.Status) {
			want := slotName + "/"
			if strings.HasPrefix(m.subject, prefix+".memory.note.") {
				want = b.slot() + "/"
			}
			if strings.HasPrefix(m.subject, prefix+".memory.") && !strings.HasPrefix(m.msgID, want) {
				wrong++
			}
		}
		if wrong > 0 {
			o.fail("%d memory events published by the pipeline that does not map their table", wrong)
		}
		o.note("%d leader kills over two pipelines", 2*sc.rounds)
	}})
}

// TestProd_StreamLeaderNodeKilled takes out the JetStream node that leads the
// stream while the daemon publishes; the R3 stream elects another leader and
// the node rejoins.
func TestProd_StreamLeaderNodeKilled(t *testing.T) {
	// Publishes in flight to the old stream leader fail while later ones
	// reach the new one: at volume that breaks per-memory order today.
	runScenario(t, scenario{name: "stream leader's node killed", run: func(e *env, sc scale, o *outcome) {
		e.startPair()
		ws := startWrites(e.pool, sc.writers, sc.pause, 2, 0)
		defer ws.stop()
		for i := 0; i < sc.rounds; i++ {
			waitCommits(e.t, ws, ws.commits()+sc.step)
			old, err := e.nats.WaitStreamLeader(streamName, 30*time.Second)
			if err != nil {
				e.t.Fatal(err)
			}
			e.nats.Stop(old)
			stopped := time.Now()
			next, err := e.nats.WaitStreamLeader(streamName, 60*time.Second)
			if err != nil {
				e.t.Fatal(err)
			}
			o.note("%s → %s in %.1fs", e.nats.NodeName(old), e.nats.NodeName(next), time.Since(stopped).Seconds())
			waitCommits(e.t, ws, ws.commits()+sc.step) // writes go on meanwhile
			if err := e.nats.Start(old); err != nil {
				e.t.Fatal(err)
			}
		}
		waitCommits(e.t, ws, ws.commits()+sc.step)
		ws.stop()
	}})
}

// natsOutage stops every NATS node for about hold (at least until the
// workload committed step more transactions), then starts them again.
func natsOutage(e *env, sc scale, o *outcome, hold time.Duration, seed uint64) {
	e.startPair()
	ws := startWrites(e.pool, sc.writers, sc.pause, seed, 0)
	defer ws.stop()
	waitCommits(e.t, ws, ws.commits()+sc.step)
	e.nats.StopAll()
	down := time.Now()
	waitCommits(e.t, ws, ws.commits()+sc.step) // writes go on while NATS is away
	// The outage's length is the point here (longer or shorter than the
	// duplicate window), not a wait for an outcome.
	for time.Since(down) < hold {
		time.Sleep(250 * time.Millisecond)
	}
	if err := e.nats.StartAll(); err != nil {
		e.t.Fatal(err)
	}
	o.note("NATS unreachable %.0fs", time.Since(down).Seconds())
	waitCommits(e.t, ws, ws.commits()+sc.step)
	ws.stop()
}

// TestProd_NATSOutage stops all three NATS nodes for a few seconds.
func TestProd_NATSOutage(t *testing.T) {
	runScenario(t, scenario{name: "NATS unreachable (short)", run: func(e *env, sc scale, o *outcome) {
		natsOutage(e, sc, o, 2*time.Second, 3)
	}})
}

// TestProd_NATSOutageLongerThanWindow stops all three NATS nodes for longer
// than the stream's duplicate window.
func TestProd_NATSOutageLongerThanWindow(t *testing.T) {
	runScenario(t, scenario{name: "NATS unreachable > dup window", soakOnly: true,
		run: func(e *env, sc scale, o *outcome) {
			natsOutage(e, sc, o, dupWindow+15*time.Second, 4)
		}})
}

// daemonRestart writes, waits until every change is in the stream, kills both
// pods at once (the node they ran on died), waits hold and starts two new
// pods: whatever was stored but not yet confirmed is replayed.
func daemonRestart(e *env, sc scale, o *outcome, hold time.Duration, seed uint64) {
	a, b := e.startPair()
	ws := startWrites(e.pool, sc.writers, sc.pause, seed, 0)
	waitCommits(e.t, ws, ws.commits()+int64(sc.rounds)*sc.step)
	ws.stop()
	// Kill right after the last event is stored: the backlog the slot has
	// not confirmed yet is then as large as it gets.
	var logged int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM change_log`).Scan(&logged); err != nil {
		e.t.Fatal(err)
	}
	eventually(e.t, sc.checkWithin, "every change stored", func() (bool, string) {
		n := memoryEvents(e)
		return n >= logged, fmt.Sprintf("%d of %d memory events stored", n, logged)
	})
	var confirmed, target *string
	_ = e.pool.QueryRow(context.Background(), `SELECT confirmed_flush_lsn::text, (SELECT max(lsn) FROM change_log)::text FROM pg_replication_slots WHERE slot_name = $1`, slotName).Scan(&confirmed, &target)
	a.kill()
	b.kill()
	o.note("killed with the slot confirmed at %s, last change at %s", deref(confirmed), deref(target))
	down := time.Now()
	// The downtime's length is the point here, not a wait for an outcome.
	for time.Since(down) < hold {
		time.Sleep(250 * time.Millisecond)
	}
	e.startPair()
	o.note("both pods down %.0fs", time.Since(down).Seconds())
}

// memoryEvents counts the memory messages the stream holds (cheaply, from
// the stream's per-subject counts).
func memoryEvents(e *env) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := e.js.Stream(ctx, streamName)
	if err != nil {
		return -1
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(prefix+".memory.>"))
	if err != nil {
		return -1
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n
}

// TestProd_DaemonKilledAndRestarted kills both pods and starts new ones at once.
func TestProd_DaemonKilledAndRestarted(t *testing.T) {
	runScenario(t, scenario{name: "daemon SIGKILL, restart at once", run: func(e *env, sc scale, o *outcome) {
		daemonRestart(e, sc, o, 0, 5)
	}})
}

// TestProd_DaemonRestartedAfterWindow kills both pods and starts new ones
// after the stream's duplicate window.
func TestProd_DaemonRestartedAfterWindow(t *testing.T) {
	runScenario(t, scenario{name: "daemon SIGKILL, restart > dup window", soakOnly: true,
		run: func(e *env, sc scale, o *outcome) {
			daemonRestart(e, sc, o, dupWindow+15*time.Second, 6)
		}})
}

// TestProd_PostgresPaused freezes every Postgres process (SIGSTOP on the
// postmaster and its children, which freezes the leader's advisory-lock
// session too) for 1.5 s; the leader must not change.
func TestProd_PostgresPaused(t *testing.T) {
	runScenario(t, scenario{name: "Postgres paused 1.5s", opts: envOptions{ownPostgres: true},
		run: func(e *env, sc scale, o *outcome) {
			e.startPair()
			ws := startWrites(e.pool, sc.writers, sc.pause, 7, 0)
			defer ws.stop()
			for i := 0; i < sc.rounds; i++ {
				waitCommits(e.t, ws, ws.commits()+sc.step)
				before, _ := e.leaders.counts()
				pids := postgresPIDs(e)
				signalAll(e.t, pids, syscall.SIGSTOP)
				// The pause's length is the fault itself.
				time.Sleep(1500 * time.Millisecond)
				signalAll(e.t, pids, syscall.SIGCONT)
				// Observe the leaders for a while: a step-down triggered by
				// the pause shows within a few lock polls.
				resumed := time.Now()
				for time.Since(resumed) < 5*time.Second {
					time.Sleep(100 * time.Millisecond)
				}
				if after, _ := e.leaders.counts(); after != before {
					o.fail("pause %d: the leader stepped down %d time(s)", i+1, after-before)
				}
				o.note("paused %d processes", len(pids))
			}
			waitCommits(e.t, ws, ws.commits()+sc.step)
			ws.stop()
			if _, changes := e.leaders.counts(); changes > 0 {
				o.fail("leadership moved %d time(s) over the pauses", changes)
			}
		}})
}

// postgresPIDs returns the postmaster of the environment's own cluster and
// all its children (backends, the walsender, the leader's lock session,
// background workers).
func postgresPIDs(e *env) []int {
	t := e.t
	t.Helper()
	var backend int
	if err := e.pool.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		t.Fatal(err)
	}
	postmaster := ppid(backend)
	if postmaster <= 1 {
		t.Fatalf("no postmaster above backend %d", backend)
	}
	pids := []int{postmaster}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range ents {
		pid, err := strconv.Atoi(en.Name())
		if err == nil && ppid(pid) == postmaster {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ppid reads the parent pid from /proc/<pid>/stat (0 when gone).
func ppid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command may contain spaces
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

func signalAll(t testing.TB, pids []int, sig syscall.Signal) {
	t.Helper()
	for _, pid := range pids {
		if err := syscall.Kill(pid, sig); err != nil && err != syscall.ESRCH {
			t.Fatalf("signal %d: %v", pid, err)
		}
	}
}

// TestProd_NATSPausedLargeRows pauses NATS for the pods (connections open,
// nothing moves) while the app writes notes of about 120 KB: the daemon's
// peak RSS must stay under the manifest's memory limit.
func TestProd_NATSPausedLargeRows(t *testing.T) {
	runScenario(t, scenario{name: "NATS paused, 120 KB rows", soakOnly: true, opts: envOptions{natsProxied: true},
		run: func(e *env, sc scale, o *outcome) {
			e.startPair()
			const notes, body = 4000, 120 << 10
			e.pauseNATS(true)
			paused := time.Now()
			w := &workload{pool: e.pool}
			ctx := context.Background()
			for i := 0; i < notes; i++ {
				if err := w.insertNote(ctx, body); err != nil {
					e.t.Fatal(err)
				}
			}
			// Let the leader read what it can while NATS stays paused: the
			// span is the fault itself.
			for time.Since(paused) < 20*time.Second {
				time.Sleep(250 * time.Millisecond)
			}
			o.note("%d notes of %d KiB written while NATS was paused %.0fs; peak RSS before the thaw %s", notes, body>>10, time.Since(paused).Seconds(), mib(e.peakRSS()))
			e.pauseNATS(false)
			o.rssGoal = e.man.memLimit * 7 / 8 // issue 11: 112 MiB at a 128 MiB limit
		}})
}

// TestProd_SSEClientsAndReadFlood holds idle SSE clients on both pods
// (through the Service) and floods presence reads while the app writes: the
// slot must keep up (lag flat, no growth over the window).
func TestProd_SSEClientsAndReadFlood(t *testing.T) {
	runScenario(t, scenario{name: "SSE clients + read flood", run: func(e *env, sc scale, o *outcome) {
		e.startPair()
		ws := startWrites(e.pool, 1, 2*time.Millisecond, 8, 0)
		defer ws.stop()
		waitCommits(e.t, ws, ws.commits()+sc.step)

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var sseOK, sseRefused, sseErr atomic.Int64
		var wg sync.WaitGroup
		defer wg.Wait()
		defer cancel()
		sseClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1}}
		for i := 0; i < sc.sseClients; i++ {
			in := e.svc.pick()
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+in.addr+"/api/storage/sync-status/stream", nil)
				resp, err := sseClient.Do(req)
				if err != nil {
					sseErr.Add(1)
					return
				}
				defer resp.Body.Close()
				if resp.StatusCode != 200 {
					sseRefused.Add(1)
					return
				}
				sseOK.Add(1)
				br := bufio.NewReader(resp.Body)
				for {
					if _, err := br.ReadString('\n'); err != nil {
						return
					}
				}
			}()
		}
		eventually(e.t, 60*time.Second, "the SSE clients connected", func() (bool, string) {
			n := sseOK.Load() + sseRefused.Load() + sseErr.Load()
			return n == int64(sc.sseClients), fmt.Sprintf("%d of %d answered", n, sc.sseClients)
		})

		ids := memoryIDs(e)
		var reads, readErrs atomic.Int64
		readClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		for i := 0; i < sc.readers; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(i), 9))
				for ctx.Err() == nil {
					in := e.svc.pick()
					req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+in.addr+"/api/memories/image/"+ids[r.IntN(len(ids))]+"/presence", nil)
					resp, err := readClient.Do(req)
					if err != nil {
						if ctx.Err() == nil {
							readErrs.Add(1)
						}
						continue
					}
					resp.Body.Close()
					reads.Add(1)
				}
			}(i)
		}
		samples := sampleLag(e, sc.floodWindow)
		cancel()
		ws.stop()
		slope, walRate, lo, hi := lagTrend(samples)
		first, last := lagThirds(samples)
		o.note("%d SSE clients open (%d refused, %d errors), %d presence reads (%d errors) in %s; slot lag %s..%s, trend %+.0f B/s against %.0f B/s of WAL",
			sseOK.Load(), sseRefused.Load(), sseErr.Load(), reads.Load(), readErrs.Load(), sc.floodWindow, kib(lo), kib(hi), slope, walRate)
		// Flat: the lag saw-tooths with the status interval (it drops each
		// time the daemon confirms), so a pipeline that keeps up gets back
		// down in the last third of the window to where it was in the
		// first; one starved by the API never does.
		// The noise allowed is two status intervals' worth of WAL (a
		// confirm delayed on a loaded machine), at least lagNoise.
		if noise := max(lagNoise, 4*walRate); last > first+noise {
			o.fail("slot lag grew: its low in the last third of the window (%s) is above its high in the first third (%s) by more than %s", kib(last), kib(first), kib(noise))
		}
		if sseOK.Load() == 0 {
			o.fail("no SSE client was served")
		}
	}})
}

// lagNoise is the least lag difference the flatness check ignores.
const lagNoise = 16 << 10

// lagThirds returns the highest lag of the window's first third and the
// lowest of its last third.
func lagThirds(s []lagSample) (firstHigh, lastLow float64) {
	if len(s) < 3 {
		return 0, 0
	}
	n := len(s) / 3
	firstHigh, lastLow = s[0].lag, s[len(s)-1].lag
	for _, x := range s[:n] {
		firstHigh = max(firstHigh, x.lag)
	}
	for _, x := range s[len(s)-n:] {
		lastLow = min(lastLow, x.lag)
	}
	return firstHigh, lastLow
}

func kib(b float64) string { return fmt.Sprintf("%.0f KiB", b/1024) }

// memoryIDs returns some image ids to read.
func memoryIDs(e *env) []string {
	rows, err := e.pool.Query(context.Background(), `SELECT id::text FROM images LIMIT 500`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			e.t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		e.t.Fatal("no images written")
	}
	return ids
}

// lagSample is the slot's lag at one moment.
type lagSample struct {
	at  time.Time
	wal float64 // pg_current_wal_lsn as bytes
	lag float64 // wal - confirmed_flush_lsn
}

// sampleLag samples the slot lag from pg_replication_slots every 500 ms for
// window (the sampling span is the measurement itself).
func sampleLag(e *env, window time.Duration) []lagSample {
	var out []lagSample
	end := time.Now().Add(window)
	for time.Now().Before(end) {
		var wal, lag float64
		err := e.pool.QueryRow(context.Background(), `SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, pg_current_wal_lsn() - confirmed_flush_lsn
			FROM pg_replication_slots WHERE slot_name = $1`, slotName).Scan(&wal, &lag)
		if err == nil {
			out = append(out, lagSample{at: time.Now(), wal: wal, lag: lag})
		}
		time.Sleep(500 * time.Millisecond)
	}
	return out
}

// lagTrend fits a line to lag over time (bytes/s) and returns it with the
// WAL rate over the window and the lag's range.
func lagTrend(s []lagSample) (slope, walRate, lo, hi float64) {
	if len(s) < 2 {
		return 0, 0, 0, 0
	}
	t0 := s[0].at
	var sx, sy, sxx, sxy float64
	lo, hi = s[0].lag, s[0].lag
	for _, x := range s {
		tx := x.at.Sub(t0).Seconds()
		sx += tx
		sy += x.lag
		sxx += tx * tx
		sxy += tx * x.lag
		lo, hi = min(lo, x.lag), max(hi, x.lag)
	}
	n := float64(len(s))
	if d := n*sxx - sx*sx; d != 0 {
		slope = (n*sxy - sx*sy) / d
	}
	span := s[len(s)-1].at.Sub(t0).Seconds()
	if span > 0 {
		walRate = (s[len(s)-1].wal - s[0].wal) / span
	}
	return slope, walRate, lo, hi
}
