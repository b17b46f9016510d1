package prodtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"gopkg.in/yaml.v3"

	"github.com/edgesync/edgesync/internal/natstest"
	"github.com/edgesync/edgesync/internal/pgtest"
	"github.com/edgesync/edgesync/internal/testwait"
)

// manifestDir is the kustomize base the environment copies.
const manifestDir = "../deploy/k8s/base"

// streamName and prefix are the manifest's EDGESYNC_STREAM and
// EDGESYNC_SUBJECT_PREFIX; loadManifest checks they still are.
const (
	streamName = "EDGESYNC"
	prefix     = "edgesync"
	slotName   = "edgesync"
)

// manifest is what the environment takes from deploy/k8s/base.
type manifest struct {
	env        []string // the ConfigMap (edgesync.env), KEY=VALUE
	goMemLimit string   // the container's GOMEMLIMIT
	memLimit   int64    // the container's resources.limits.memory, bytes
}

func loadManifest(t testing.TB) manifest {
	t.Helper()
	var m manifest
	f, err := os.Open(filepath.Join(manifestDir, "edgesync.env"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.Contains(line, "=") {
			t.Fatalf("edgesync.env: %q is not KEY=VALUE", line)
		}
		m.env = append(m.env, line)
	}
	raw, err := os.ReadFile(filepath.Join(manifestDir, "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Spec struct {
			Replicas int `yaml:"replicas"`
			Template struct {
				Spec struct {
					Containers []struct {
						Name string `yaml:"name"`
						Env  []struct {
							Name  string `yaml:"name"`
							Value string `yaml:"value"`
						} `yaml:"env"`
						Resources struct {
							Limits map[string]string `yaml:"limits"`
						} `yaml:"resources"`
					} `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(raw, &d); err != nil {
		t.Fatalf("deployment.yaml: %v", err)
	}
	if d.Spec.Replicas != 2 {
		t.Fatalf("deployment.yaml has %d replicas; this environment models 2 (leader and standby)", d.Spec.Replicas)
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name != "edgesync" {
			continue
		}
		for _, e := range c.Env {
			if e.Name == "GOMEMLIMIT" {
				m.goMemLimit = e.Value
			}
		}
		m.memLimit, err = parseQuantity(c.Resources.Limits["memory"])
		if err != nil {
			t.Fatalf("deployment.yaml memory limit: %v", err)
		}
	}
	if m.goMemLimit == "" || m.memLimit == 0 {
		t.Fatal("deployment.yaml: the edgesync container has no GOMEMLIMIT or no memory limit")
	}
	for _, want := range []string{"EDGESYNC_STREAM=" + streamName, "EDGESYNC_SUBJECT_PREFIX=" + prefix, "EDGESYNC_SLOT=" + slotName} {
		if !contains(m.env, want) {
			t.Fatalf("edgesync.env no longer has %s; update prodtest", want)
		}
	}
	return m
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// parseQuantity reads a Kubernetes memory quantity (128Mi, 1Gi, 500M, 1000).
func parseQuantity(q string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}}
	for _, u := range units {
		if strings.HasSuffix(q, u.suffix) {
			n, err := strconv.ParseInt(strings.TrimSuffix(q, u.suffix), 10, 64)
			return n * u.mult, err
		}
	}
	return strconv.ParseInt(q, 10, 64)
}

// env is one production-shape environment: a database, the NATS cluster
// with the stream, the instances and the Service in front of them.
type env struct {
	t        *testing.T
	man      manifest
	dbURL    string
	pool     *pgxpool.Pool
	pg       *pgtest.Cluster // the scenario's own cluster, when it has one
	nats     *natstest.Cluster
	js       jetstream.JetStream
	svc      *service
	logDir   string
	seq      int
	mu       sync.Mutex
	all      []*instance // every instance ever started, for the RSS report
	leaders  *leaderWatch
	adminTok string
	proxies  []*freezeProxy // the pods' way to the NATS nodes, when proxied
}

type envOptions struct {
	ownPostgres bool // the scenario stops Postgres: it gets a cluster of its own
	natsProxied bool // the pods reach NATS through freeze proxies (pauseNATS)
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	e := &env{t: t, man: loadManifest(t), logDir: t.TempDir(), adminTok: "prodtest-admin"}
	binary(t) // build before anything starts, so its time is not in a scenario
	if o.ownPostgres {
		e.pg = pgtest.StartCluster(t)
		e.dbURL = e.pg.NewDB(t)
	} else {
		e.dbURL = postgres(t).NewDB(t)
	}
	e.pool = pgtest.Pool(t, e.dbURL)
	if _, err := e.pool.Exec(context.Background(), changeLogDDL); err != nil {
		t.Fatal(err)
	}
	e.nats = natstest.StartCluster(t, 3)
	js, err := jetstream.New(e.nats.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	e.js = js
	// The operator creates the stream (the daemon never changes an existing
	// one): R3 on file storage, with the smallest dedupe window the daemon
	// accepts.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := e.nats.CreateStream(ctx, js, jetstream.StreamConfig{
		Name:       streamName,
		Subjects:   []string{prefix + ".memory.>", prefix + ".edge.>", prefix + ".gallery.>", prefix + ".sync.>", prefix + ".reconcile.>"},
		Storage:    jetstream.FileStorage,
		Replicas:   3,
		Duplicates: dupWindow,
		MaxAge:     24 * time.Hour,
	}); err != nil {
		t.Fatal(err)
	}
	if o.natsProxied {
		for i := 0; i < e.nats.Size(); i++ {
			e.proxies = append(e.proxies, startProxy(t, strings.TrimPrefix(e.nats.NodeURL(i), "nats://")))
		}
	}
	e.svc = &service{}
	e.leaders = watchLeaders(t, e)
	t.Cleanup(func() {
		if t.Failed() {
			e.dumpLogs()
		}
	})
	return e
}

// natsURL is the NATS URL list the pods are given.
func (e *env) natsURL() string {
	if len(e.proxies) == 0 {
		return e.nats.URL()
	}
	urls := make([]string, len(e.proxies))
	for i, p := range e.proxies {
		urls[i] = "nats://" + p.addr()
	}
	return strings.Join(urls, ",")
}

// pauseNATS freezes (or thaws) every pod's connections to NATS.
func (e *env) pauseNATS(paused bool) {
	if len(e.proxies) == 0 {
		e.t.Fatal("pauseNATS needs envOptions{natsProxied: true}")
	}
	for _, p := range e.proxies {
		p.setFrozen(paused)
	}
}

// dupWindow is the stream's duplicate window: the least the daemon accepts.
const dupWindow = 2 * time.Minute

// instance is one `edgesync run` process: a pod.
type instance struct {
	name     string
	pipeline string // its slot: pods of one pipeline elect one leader
	addr     string
	dataDir  string
	logPath  string
	cmd      *exec.Cmd
	done     chan struct{}
	exitErr  error
	peakRSS  atomic.Int64 // bytes, VmHWM
}

// start starts a pod: the manifest's ConfigMap, its GOMEMLIMIT, and only what
// a test must change (addresses, the secrets, the NATS credentials that the
// test cluster does not use).
func (e *env) start() *instance {
	e.t.Helper()
	return e.startIn(pipeline{})
}

// pipeline is what a pod of a further pipeline changes in the base
// manifest's ConfigMap (its overlay's edgesync.env, and the tables moved to
// it); the zero value is the base manifest's pipeline.
type pipeline struct {
	env map[string]string
}

// slot is the pipeline's slot (EDGESYNC_SLOT).
func (p pipeline) slot() string {
	if s := p.env["EDGESYNC_SLOT"]; s != "" {
		return s
	}
	return slotName
}

// overlayEnv reads an overlay's edgesync.env (the keys it changes in the
// base ConfigMap).
func overlayEnv(t testing.TB, overlay string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(manifestDir, "..", "overlays", overlay, "edgesync.env"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("overlay %s: %q is not KEY=VALUE", overlay, line)
		}
		out[k] = v
	}
	return out
}

// startIn starts a pod of pipeline p.
func (e *env) startIn(p pipeline) *instance {
	t := e.t
	t.Helper()
	e.mu.Lock()
	e.seq++
	name := fmt.Sprintf("pod%d", e.seq)
	e.mu.Unlock()
	root := filepath.Join(e.logDir, name)
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	in := &instance{name: name, pipeline: p.slot(), addr: freeAddr(t), logPath: filepath.Join(e.logDir, name+".log"), done: make(chan struct{})}
	// The pod's EDGESYNC_DATA_DIR lives under its /tmp emptyDir and does not
	// exist when the container starts.
	envv := []string{"KUBERNETES_SERVICE_HOST=127.0.0.1", "KUBERNETES_SERVICE_PORT=443", "TMPDIR=" + filepath.Join(root, "tmp")}
	if err := os.MkdirAll(filepath.Join(root, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, kv := range e.man.env {
		k, v, _ := strings.Cut(kv, "=")
		if o, ok := p.env[k]; ok {
			v = o
		}
		seen[k] = true
		switch k {
		case "EDGESYNC_HTTP_ADDR":
			v = in.addr
		case "EDGESYNC_NATS_URL":
			v = e.natsURL()
		case "EDGESYNC_NATS_CREDS", "EDGESYNC_ICP_IDENTITY_FILE":
			v = "" // the test cluster has no accounts; the ICP mirror is off as in the ConfigMap
		case "EDGESYNC_DATA_DIR":
			v = filepath.Join(root, "tmp", strings.TrimPrefix(v, "/tmp/"))
			in.dataDir = v
		}
		envv = append(envv, k+"="+v)
	}
	for k, v := range p.env {
		if !seen[k] {
			envv = append(envv, k+"="+v)
		}
	}
	envv = append(envv,
		"EDGESYNC_DATABASE_URL="+e.dbURL,
		"EDGESYNC_ADMIN_TOKEN="+e.adminTok,
		"GOMEMLIMIT="+e.man.goMemLimit,
	)
	logf, err := os.Create(in.logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary(t), "run")
	cmd.Env = envv
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	in.cmd = cmd
	go func() {
		in.exitErr = cmd.Wait()
		logf.Close()
		close(in.done)
	}()
	go in.sampleRSS()
	t.Cleanup(in.kill)
	e.mu.Lock()
	e.all = append(e.all, in)
	e.mu.Unlock()
	e.svc.add(in)
	return in
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// alive reports whether the process still runs.
func (in *instance) alive() bool {
	select {
	case <-in.done:
		return false
	default:
		return true
	}
}

// kill is SIGKILL; the peak RSS is read once more just before.
func (in *instance) kill() {
	if !in.alive() {
		return
	}
	in.readRSS()
	_ = in.cmd.Process.Signal(syscall.SIGKILL)
	<-in.done
}

// term is SIGTERM and waits for the exit.
func (in *instance) term(within time.Duration) error {
	in.readRSS()
	_ = in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-in.done:
		return in.exitErr
	case <-time.After(within):
		return fmt.Errorf("%s did not exit within %s of SIGTERM", in.name, within)
	}
}

// sampleRSS keeps the process' VmHWM (the kernel's own peak RSS) until it
// exits: the figure a memory limit is held against.
func (in *instance) sampleRSS() {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-in.done:
			return
		case <-tick.C:
			in.readRSS()
		}
	}
}

func (in *instance) readRSS() {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", in.cmd.Process.Pid))
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				if kb*1024 > in.peakRSS.Load() {
					in.peakRSS.Store(kb * 1024)
				}
			}
		}
	}
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

func (in *instance) get(path string) (int, string, error) {
	resp, err := httpClient.Get("http://" + in.addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// metric returns the value of a metric line that starts with name (labels
// included), and whether it was found.
func (in *instance) metric(name string) (float64, bool) {
	code, body, err := in.get("/metrics")
	if err != nil || code != 200 {
		return 0, false
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, name+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, name)), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// leader reports whether the instance says it leads (edgesync_leader 1).
func (in *instance) leader() bool {
	v, ok := in.metric("edgesync_leader")
	return ok && v == 1
}

// ready reports whether /readyz answers 200.
func (in *instance) ready() bool {
	code, _, err := in.get("/readyz")
	return err == nil && code == 200
}

// peakRSSOf is the largest VmHWM of the environment's instances.
func (e *env) peakRSS() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var peak int64
	for _, in := range e.all {
		in.readRSS()
		if p := in.peakRSS.Load(); p > peak {
			peak = p
		}
	}
	return peak
}

// rssProblems holds every instance's peak RSS against the manifest's limit.
func (e *env) rssProblems() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, in := range e.all {
		if p := in.peakRSS.Load(); p > e.man.memLimit {
			out = append(out, fmt.Sprintf("%s peaked at %s RSS, above the manifest's memory limit of %s: Kubernetes would OOM-kill it", in.name, mib(p), mib(e.man.memLimit)))
		}
	}
	return out
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func (e *env) dumpLogs() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, in := range e.all {
		b, _ := os.ReadFile(in.logPath)
		if len(b) > 6000 {
			b = b[len(b)-6000:]
		}
		e.t.Logf("%s log (tail):\n%s", in.name, b)
	}
}

// startPair starts the Deployment: the first pod leads once the slot streams,
// the second is a ready standby.
func (e *env) startPair() (leader, standby *instance) {
	e.t.Helper()
	return e.startPairIn(pipeline{})
}

// startPairIn starts pipeline p's leader and its standby.
func (e *env) startPairIn(p pipeline) (leader, standby *instance) {
	e.t.Helper()
	a := e.startIn(p)
	eventually(e.t, 60*time.Second, "the first pod leads", func() (bool, string) { return a.leader(), "" })
	waitSlot(e.t, e.pool, p.slot())
	b := e.startIn(p)
	eventually(e.t, 60*time.Second, "the second pod is a ready standby", func() (bool, string) {
		return b.ready() && !b.leader(), ""
	})
	return a, b
}

// currentLeader returns the live instance that says it leads, or nil.
func (e *env) currentLeader() *instance { return e.leaderOf(slotName) }

// leaderOf returns the live instance of the pipeline of slot that says it
// leads, or nil.
func (e *env) leaderOf(slot string) *instance {
	for _, in := range e.svc.members() {
		if in.pipeline == slot && in.leader() {
			return in
		}
	}
	return nil
}

// service spreads requests over the live instances round robin, as a
// Kubernetes Service over ready pods does.
type service struct {
	mu   sync.Mutex
	pods []*instance
	next atomic.Uint64
}

func (s *service) add(in *instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pods = append(s.pods, in)
}

func (s *service) members() []*instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	var live []*instance
	for _, p := range s.pods {
		if p.alive() {
			live = append(live, p)
		}
	}
	return live
}

// pick returns the next live instance (nil when none runs).
func (s *service) pick() *instance {
	live := s.members()
	if len(live) == 0 {
		return nil
	}
	return live[s.next.Add(1)%uint64(len(live))]
}

// leaderWatch polls edgesync_leader on every live instance and counts
// step-downs (1 → 0 on one instance) and leader changes (a different instance
// leads than the one before).
type leaderWatch struct {
	mu        sync.Mutex
	state     map[*instance]bool
	stepDowns int
	changes   int
	last      map[string]*instance // by pipeline
	changedAt time.Time
}

func watchLeaders(t *testing.T, e *env) *leaderWatch {
	w := &leaderWatch{state: map[*instance]bool{}, last: map[string]*instance{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for _, in := range e.svc.members() {
				v, ok := in.metric("edgesync_leader")
				if !ok {
					continue // unreachable: no change observed
				}
				w.observe(in, v == 1)
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

func (w *leaderWatch) observe(in *instance, leads bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state[in] && !leads {
		w.stepDowns++
	}
	w.state[in] = leads
	if last := w.last[in.pipeline]; leads && last != in {
		if last != nil {
			w.changes++
		}
		w.last[in.pipeline] = in
		w.changedAt = time.Now()
	}
}

// counts returns the step-downs and leader changes observed so far.
func (w *leaderWatch) counts() (stepDowns, changes int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stepDowns, w.changes
}

// eventually polls cond until it holds or the deadline passes (every 50 ms:
// the conditions read Postgres and NATS while the scenarios measure).
func eventually(t testing.TB, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	testwait.Poll(t, within, 50*time.Millisecond, what, cond)
}

// waitSlot waits until the pipeline streams: its snapshot is done.
func waitSlot(t testing.TB, pool *pgxpool.Pool, slot string) {
	t.Helper()
	eventually(t, 60*time.Second, "slot "+slot+" streaming", func() (bool, string) {
		var n int
		err := pool.QueryRow(context.Background(), `SELECT count(*) FROM edgesync_pipeline_state WHERE slot = $1 AND snapshot_state = 'done'`, slot).Scan(&n)
		return err == nil && n == 1, fmt.Sprint(err)
	})
}
