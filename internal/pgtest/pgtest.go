// Package pgtest starts throwaway PostgreSQL clusters for tests and gives each
// test a fresh database with edgesync's migrations (and the reference app
// schema) applied.
//
// One shared cluster is started per test binary, lazily, from the machine's
// PostgreSQL binaries (PATH, `pg_config --bindir`, /usr/lib/postgresql/*/bin),
// with wal_level=logical on a free loopback port in a temp dir. Tests that
// restart or kill Postgres start their own cluster with StartCluster. When the
// process runs as root (CI does) the server runs as the unprivileged user
// "nobody", since PostgreSQL refuses to run as root.
//
// EDGESYNC_TEST_DATABASE_URL points the helpers at an existing server instead
// (the role needs CREATEDB and REPLICATION).
//
// It may import migrations and the pgx driver; nothing else of the project.
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for goose

	"github.com/edgesync/edgesync/migrations"
)

// InstallHint is the one line printed when no PostgreSQL server binaries exist.
const InstallHint = "PostgreSQL server binaries (initdb, postgres) not found: install them with `sudo apt-get install -y postgresql` (or set EDGESYNC_TEST_DATABASE_URL to a server with wal_level=logical)"

const templateDB = "edgesync_template"

// Cluster is a running PostgreSQL server owned by the test binary (or an
// external one named by EDGESYNC_TEST_DATABASE_URL).
type Cluster struct {
	Host string
	Port int
	User string

	external string // admin URL of an external server
	bin      string
	base     string // temp dir holding data and log (local clusters)
	dir      string // data directory (local clusters)
	logPath  string
	cred     *syscall.Credential

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}

	templateOnce sync.Once
	templateErr  error
	seq          atomic.Int64
}

var (
	sharedOnce sync.Once
	shared     *Cluster
	sharedErr  error
)

// Main runs the tests of a package and stops the shared cluster afterwards.
// Use it from TestMain: func TestMain(m *testing.M) { pgtest.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.Close()
	}
	os.Exit(code)
}

// Shared returns the cluster shared by all tests of this binary, starting it
// on first use.
func Shared(tb testing.TB) *Cluster {
	tb.Helper()
	sharedOnce.Do(func() {
		if u := os.Getenv("EDGESYNC_TEST_DATABASE_URL"); u != "" {
			shared, sharedErr = external(u)
			return
		}
		shared, sharedErr = start("")
	})
	if sharedErr != nil {
		tb.Fatal(sharedErr)
	}
	return shared
}

// Start starts a cluster outside any test (the demo uses it); Close it.
func Start() (*Cluster, error) { return start("") }

// CreateDB creates an empty database and returns its URL.
func (c *Cluster) CreateDB(ctx context.Context, name string) (string, error) {
	if err := c.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE template0"); err != nil {
		return "", err
	}
	return c.URL(name), nil
}

// StartCluster starts a cluster of the test's own, stopped at the end of the
// test. Use it for tests that stop, kill or restart Postgres.
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	if os.Getenv("EDGESYNC_TEST_DATABASE_URL") != "" {
		tb.Fatal("this test stops and restarts its own PostgreSQL server and cannot run against EDGESYNC_TEST_DATABASE_URL; unset it")
	}
	return StartClusterConf(tb, "")
}

// StartClusterConf is StartCluster with extra postgresql.conf lines, which
// override the defaults (e.g. "wal_level = replica" to test the checks).
func StartClusterConf(tb testing.TB, conf string) *Cluster {
	tb.Helper()
	if os.Getenv("EDGESYNC_TEST_DATABASE_URL") != "" {
		tb.Fatal("this test needs its own PostgreSQL server and cannot run against EDGESYNC_TEST_DATABASE_URL; unset it")
	}
	c, err := start(conf)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

// New returns the URL of a fresh database on the shared cluster with every
// migration, including the reference app schema, applied. The database is
// dropped when the test ends.
func New(tb testing.TB) string {
	tb.Helper()
	return Shared(tb).NewDB(tb)
}

// NewEmpty returns the URL of a fresh, empty database on the shared cluster.
func NewEmpty(tb testing.TB) string {
	tb.Helper()
	return Shared(tb).NewEmptyDB(tb)
}

// Pool opens a pgx pool on url, closed at the end of the test.
func Pool(tb testing.TB, url string) *pgxpool.Pool {
	tb.Helper()
	p, err := pgxpool.New(context.Background(), url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

// URL returns the connection URL of database db on the cluster.
func (c *Cluster) URL(db string) string {
	if c.external != "" {
		u, _ := url.Parse(c.external)
		u.Path = "/" + db
		return u.String()
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", c.User, c.Host, c.Port, db)
}

func (c *Cluster) adminURL() string {
	if c.external != "" {
		return c.external
	}
	return c.URL("postgres")
}

// NewDB creates a database from the migrated template and drops it at the end
// of the test.
func (c *Cluster) NewDB(tb testing.TB) string {
	tb.Helper()
	c.templateOnce.Do(func() { c.templateErr = c.makeTemplate() })
	if c.templateErr != nil {
		tb.Fatal(c.templateErr)
	}
	return c.create(tb, templateDB)
}

// NewEmptyDB creates an empty database and drops it at the end of the test.
func (c *Cluster) NewEmptyDB(tb testing.TB) string {
	tb.Helper()
	return c.create(tb, "template0")
}

func (c *Cluster) create(tb testing.TB, template string) string {
	tb.Helper()
	name := fmt.Sprintf("t_%d_%d", os.Getpid(), c.seq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, template)); err != nil {
		tb.Fatalf("pgtest: create database: %v", err)
	}
	tb.Cleanup(func() { c.Drop(name) })
	return c.URL(name)
}

// Drop removes a database, its replication slots first, and disconnects its
// sessions. Errors are ignored: a stopped cluster needs no cleanup.
func (c *Cluster) Drop(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.adminURL())
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	// Slots pin WAL and block DROP DATABASE; walsenders hold them.
	_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, name)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		_, _ = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active`, name)
		var n int
		_ = conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = $1`, name).Scan(&n)
		if n == 0 {
			break
		}
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active`, name)
		time.Sleep(50 * time.Millisecond)
	}
	_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
}

func (c *Cluster) exec(ctx context.Context, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, c.adminURL())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

func (c *Cluster) makeTemplate() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_ = c.exec(ctx, "DROP DATABASE IF EXISTS "+templateDB+" WITH (FORCE)")
	if err := c.exec(ctx, "CREATE DATABASE "+templateDB+" TEMPLATE template0"); err != nil {
		return fmt.Errorf("pgtest: create template: %w", err)
	}
	db, err := sql.Open("pgx", c.URL(templateDB))
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := migrations.Up(ctx, db, true); err != nil {
		return fmt.Errorf("pgtest: migrate template: %w", err)
	}
	return db.Close()
}

func external(u string) (*Cluster, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("pgtest: EDGESYNC_TEST_DATABASE_URL: %w", err)
	}
	defer conn.Close(ctx)
	var level string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return nil, err
	}
	if level != "logical" {
		return nil, fmt.Errorf("pgtest: EDGESYNC_TEST_DATABASE_URL server has wal_level=%s; set wal_level=logical and restart it", level)
	}
	cfg := conn.Config()
	return &Cluster{Host: cfg.Host, Port: int(cfg.Port), User: cfg.User, external: u}, nil
}

// FindBinaries returns the directory holding initdb and postgres.
func FindBinaries() (string, error) {
	var dirs []string
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(real))
		}
		dirs = append(dirs, filepath.Dir(p))
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	globbed, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(globbed, func(i, j int) bool { return versionOf(globbed[i]) > versionOf(globbed[j]) })
	dirs = append(dirs, globbed...)
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", errors.New(InstallHint)
}

func versionOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// credential returns the user to run the server as when we are root.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root and there is no user 'nobody' to run PostgreSQL as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func start(extraConf string) (*Cluster, error) {
	bin, err := FindBinaries()
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	base, err := os.MkdirTemp("", "edgesync-pgtest-")
	if err != nil {
		return nil, err
	}
	// The server user must reach its data directory.
	if err := os.Chmod(base, 0o755); err != nil {
		return nil, err
	}
	dir := filepath.Join(base, "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	c := &Cluster{Host: "127.0.0.1", User: "postgres", bin: bin, base: base, dir: dir, logPath: filepath.Join(base, "postgres.log"), cred: cred}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = base
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgtest: initdb: %v: %s", err, lastLines(string(out), 5))
	}
	conf := `
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
wal_level = logical
max_replication_slots = 40
max_wal_senders = 40
max_connections = 300
fsync = off
synchronous_commit = on
full_page_writes = off
shared_buffers = 128MB
wal_sender_timeout = 60s
log_min_messages = warning
`
	f, err := os.OpenFile(filepath.Join(dir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	_, err = f.WriteString(conf + extraConf + "\n")
	f.Close()
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		return nil, err
	}
	return c, nil
}

// Start starts (or restarts) a stopped local cluster on its port.
func (c *Cluster) Start() error {
	if c.external != "" {
		return errors.New("pgtest: cannot start an external server")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil {
		return nil
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		if c.Port == 0 || attempt > 0 && lastErr != nil && c.portLost() {
			p, err := freePort()
			if err != nil {
				return err
			}
			c.Port = p
		}
		logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		cmd := exec.Command(filepath.Join(c.bin, "postgres"), "-D", c.dir, "-p", strconv.Itoa(c.Port))
		cmd.Stdout, cmd.Stderr = logf, logf
		// Pdeathsig: a crashed test binary takes its server with it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
		if err := cmd.Start(); err != nil {
			logf.Close()
			return fmt.Errorf("pgtest: start postgres: %w", err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
		if err := c.waitReady(done); err != nil {
			_ = cmd.Process.Signal(syscall.SIGQUIT)
			<-done
			lastErr = err
			continue
		}
		c.cmd, c.done = cmd, done
		return nil
	}
	return lastErr
}

// portLost reports whether the port has been taken by someone else.
func (c *Cluster) portLost() bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", c.Port))
	if err != nil {
		return true
	}
	l.Close()
	return false
}

func (c *Cluster) waitReady(done chan struct{}) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			log, _ := os.ReadFile(c.logPath)
			return fmt.Errorf("pgtest: postgres exited at start: %s", lastLines(string(log), 5))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err == nil {
			conn.Close(ctx)
			cancel()
			return nil
		}
		cancel()
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("pgtest: postgres did not accept connections within 30s")
}

// Stop shuts the server down fast (SIGINT: sessions are ended, no waiting for
// clients) and waits for it. Stopping a stopped cluster does nothing.
func (c *Cluster) Stop() { c.stop(syscall.SIGINT) }

// Close stops the server and removes its files.
func (c *Cluster) Close() {
	c.Stop()
	if c.base != "" {
		_ = os.RemoveAll(c.base)
	}
}

// Kill stops the server like a crash (SIGQUIT: immediate shutdown, recovery
// on the next start).
func (c *Cluster) Kill() { c.stop(syscall.SIGQUIT) }

func (c *Cluster) stop(sig syscall.Signal) {
	if c.external != "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(sig)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
	c.cmd, c.done = nil, nil
}

// Restart stops the server (as a crash when crash is true) and starts it again
// on the same port.
func (c *Cluster) Restart(crash bool) error {
	if crash {
		c.Kill()
	} else {
		c.Stop()
	}
	return c.Start()
}

// Log returns the server log, for failure messages.
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(c.logPath)
	return string(b)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
