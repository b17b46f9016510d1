package doctor

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/internal/icpreplica"
	"github.com/edgesync/edgesync/internal/natstest"
	"github.com/edgesync/edgesync/internal/pgtest"
	natssink "github.com/edgesync/edgesync/sinks/nats"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func load(t *testing.T, env map[string]string) config.Config {
	t.Helper()
	c, err := config.Load("", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func exec(t *testing.T, url, sql string) {
	t.Helper()
	if _, err := connect(t, url).Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func byCheck(rs []Result) map[string]Result {
	m := map[string]Result{}
	for _, r := range rs {
		m[r.Check] = r
	}
	return m
}

// expect asserts a check's status, and for a failure that it names a fix.
func expect(t *testing.T, r Result, want Status, detail string) {
	t.Helper()
	if r.Status != want || !strings.Contains(r.Detail+" "+r.Fix, detail) {
		t.Errorf("%s: %s %q (fix %q), want %s naming %q", r.Check, r.Status, r.Detail, r.Fix, want, detail)
	}
	if want == Fail && r.Fix == "" && !strings.Contains(r.Detail, "run ") {
		t.Errorf("%s fails without a fix: %q", r.Check, r.Detail)
	}
}

// healthyEnv is a deployment where everything is in place: migrated database,
// NATS with the daemon's stream, the ICP replica double and a blob host.
func healthyEnv(t *testing.T) map[string]string {
	t.Helper()
	ns := natstest.Start(t)
	js, err := jetstream.New(ns.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natssink.EnsureStream(context.Background(), js, natssink.StreamConfig{Name: "EDGESYNC", SubjectPrefix: "edgesync", Replicas: 1, MaxBytes: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	replica := icpreplica.StartTest(t, icpreplica.Config{})
	blob := httptest.NewServer(http.NotFoundHandler()) // any answer counts
	t.Cleanup(blob.Close)
	return map[string]string{
		"EDGESYNC_DATABASE_URL":       pgtest.New(t),
		"EDGESYNC_NATS_URL":           ns.URL(),
		"EDGESYNC_DATA_DIR":           t.TempDir(),
		"EDGESYNC_ASSET_MAX_BYTES":    "1048576",
		"EDGESYNC_ICP_URL":            replica.URL(),
		"EDGESYNC_ICP_CANISTER_ID":    replica.CanisterID().String(),
		"EDGESYNC_ICP_FETCH_ROOT_KEY": "true",
		"EDGESYNC_BLOB_URL":           blob.URL,
	}
}

func TestRun_Healthy(t *testing.T) {
	rs := Run(context.Background(), load(t, healthyEnv(t)))
	var out bytes.Buffer
	Print(&out, rs)
	t.Log("\n" + out.String())
	if Failed(rs) {
		t.Fatalf("a healthy deployment fails:\n%s", out.String())
	}
	m := byCheck(rs)
	for _, c := range []string{"database", "wal_level", "replication_slots", "replication_role", "publication", "app_schema",
		"migrations", "direct_connection", "nats", "nats_permissions", "data_dir", "icp", "blob"} {
		expect(t, m[c], Pass, "")
	}
	// The daemon's own stream on a single server: R1 is worth a warning.
	expect(t, m["stream"], Warn, "1 replica")
	if len(strings.Split(strings.TrimSpace(out.String()), "\n")) != len(rs)+1 {
		t.Errorf("want one line per check and a summary:\n%s", out.String())
	}
}

// TestChecks_MisconfiguredPostgres breaks one thing at a time; each failing
// check is seen once with its fix.
func TestChecks_MisconfiguredPostgres(t *testing.T) {
	ctx := context.Background()
	cfg := load(t, map[string]string{})

	t.Run("unreachable", func(t *testing.T) {
		env := map[string]string{"EDGESYNC_DATABASE_URL": "postgres://u:hunter2secret@" + closedPort(t) + "/db?sslmode=disable", "EDGESYNC_DATA_DIR": t.TempDir()}
		rs := Run(ctx, load(t, env))
		m := byCheck(rs)
		expect(t, m["database"], Fail, "EDGESYNC_DATABASE_URL")
		expect(t, m["wal_level"], Skip, "needs the database")
		var out bytes.Buffer
		Print(&out, rs)
		if strings.Contains(out.String(), "hunter2secret") {
			t.Fatalf("doctor prints the password:\n%s", out.String())
		}
	})

	t.Run("wal_level and slots", func(t *testing.T) {
		// wal_level=replica, and the only slot taken by another client.
		cl := pgtest.StartClusterConf(t, "wal_level = replica\nmax_replication_slots = 1\n")
		url := cl.URL("postgres")
		exec(t, url, "SELECT pg_create_physical_replication_slot('someone_else')")
		db := connect(t, url)
		expect(t, checkWalLevel(ctx, db), Fail, "wal_level = logical")
		expect(t, checkSlots(ctx, db, "edgesync"), Fail, "max_replication_slots")

		// The whole run against that server, whose database has no edgesync
		// objects and no app schema: what an operator sees.
		env := map[string]string{"EDGESYNC_DATABASE_URL": url, "EDGESYNC_DATA_DIR": t.TempDir()}
		rs := Run(ctx, load(t, env))
		var out bytes.Buffer
		Print(&out, rs)
		t.Log("\n" + out.String())
		m := byCheck(rs)
		for _, c := range []string{"wal_level", "replication_slots", "publication", "app_schema", "migrations"} {
			expect(t, m[c], Fail, "")
		}
		expect(t, m["database"], Pass, "PostgreSQL")
		if !Failed(rs) {
			t.Fatal("Failed() is false")
		}
	})

	t.Run("role without REPLICATION, not owning the tables", func(t *testing.T) {
		url := pgtest.New(t)
		exec(t, url, `CREATE ROLE doctor_norepl LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO doctor_norepl;`)
		t.Cleanup(func() { exec(t, url, "DROP OWNED BY doctor_norepl; DROP ROLE doctor_norepl") })
		roleURL := strings.Replace(url, "postgres://postgres@", "postgres://doctor_norepl@", 1)
		db := connect(t, roleURL)
		expect(t, checkReplicationRole(ctx, db), Fail, "ALTER ROLE doctor_norepl REPLICATION")
		// No publication, tables owned by someone else: the owner's SQL.
		expect(t, checkPublication(ctx, db, cfg), Fail, `CREATE PUBLICATION edgesync FOR TABLE images, videos, notes, documents, audio, gallery_items, storage_edges;`)
		expect(t, checkDirectConnection(ctx, db, roleURL), Fail, "replication connection is refused")
	})

	t.Run("publication hides changes", func(t *testing.T) {
		cases := []struct{ sql, want string }{
			{`CREATE PUBLICATION edgesync FOR TABLE images, videos, notes, documents, audio, gallery_items, storage_edges WITH (publish = 'insert, update')`, "does not publish delete, truncate"},
			{`CREATE PUBLICATION edgesync FOR TABLE images WHERE (size_bytes > 0), videos, notes, documents, audio, gallery_items, storage_edges`, "row filter on images"},
			{`CREATE PUBLICATION edgesync FOR TABLE images (id, owner_id), videos, notes, documents, audio, gallery_items, storage_edges`, "without url"},
		}
		for _, tc := range cases {
			url := pgtest.New(t)
			exec(t, url, tc.sql)
			expect(t, checkPublication(ctx, connect(t, url), cfg), Fail, tc.want)
		}
		// The daemon refuses the same publication (it runs the same check).
	})

	t.Run("app schema and migrations", func(t *testing.T) {
		url := pgtest.NewEmpty(t)
		exec(t, url, `CREATE TYPE memory_type_t AS ENUM ('image', 'note');
			CREATE TABLE galleries (id uuid PRIMARY KEY);
			CREATE TABLE gallery_items (gallery_id uuid, memory_id uuid, memory_type text);
			CREATE TABLE images (id text PRIMARY KEY, url text);
			CREATE TABLE notes (key uuid PRIMARY KEY, id uuid)`)
		app := load(t, map[string]string{"EDGESYNC_TABLES": "images=image:url:size_bytes,notes=note"})
		r := checkAppSchema(ctx, connect(t, url), app)
		for _, want := range []string{"notes's primary key is (key), not (id)", "images.id is text, not uuid", "images has no column size_bytes", "gallery_items.memory_type is text, not memory_type_t"} {
			expect(t, r, Fail, want)
		}
		expect(t, checkMigrations(ctx, pgtest.NewEmpty(t)), Fail, "edgesync migrate")
	})

	t.Run("app schema outside public, on the search path", func(t *testing.T) {
		// The pipeline and the API find galleries and gallery_items on the
		// role's search path; the doctor must look where they look.
		url := pgtest.NewEmpty(t)
		exec(t, url, `CREATE SCHEMA app;
			CREATE TYPE app.memory_type_t AS ENUM ('note');
			CREATE TABLE app.galleries (id uuid PRIMARY KEY);
			CREATE TABLE app.gallery_items (gallery_id uuid, memory_id uuid, memory_type app.memory_type_t);
			CREATE TABLE app.notes (id uuid PRIMARY KEY)`)
		notes := load(t, map[string]string{"EDGESYNC_TABLES": "notes=note"})
		expect(t, checkAppSchema(ctx, connect(t, url), notes), Fail, "table galleries does not exist")
		conn := connect(t, url)
		if _, err := conn.Exec(ctx, "SET search_path = app"); err != nil {
			t.Fatal(err)
		}
		expect(t, checkAppSchema(ctx, conn, notes), Pass, "1 memory tables")
	})
}

// TestChecks_MisconfiguredNATS: an unreachable server, streams the daemon
// refuses or advises against, a user without the permissions it needs.
func TestChecks_MisconfiguredNATS(t *testing.T) {
	ctx := context.Background()
	base := map[string]string{"EDGESYNC_DATABASE_URL": "postgres://u@" + closedPort(t) + "/db?sslmode=disable", "EDGESYNC_DATA_DIR": t.TempDir()}

	t.Run("unreachable", func(t *testing.T) {
		env := map[string]string{"EDGESYNC_NATS_URL": "nats://tok3nsecret@" + closedPort(t)}
		for k, v := range base {
			env[k] = v
		}
		rs := Run(ctx, load(t, env))
		m := byCheck(rs)
		expect(t, m["nats"], Fail, "EDGESYNC_NATS_URL")
		expect(t, m["stream"], Skip, "needs NATS")
		if strings.Contains(m["nats"].Detail, "tok3nsecret") {
			t.Fatalf("the NATS token shows: %q", m["nats"].Detail)
		}
	})

	t.Run("empty URL inside Kubernetes", func(t *testing.T) {
		env := map[string]string{"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
		for k, v := range base {
			env[k] = v
		}
		expect(t, byCheck(Run(ctx, load(t, env)))["nats"], Fail, "EDGESYNC_NATS_EMBEDDED=true")
	})

	t.Run("streams", func(t *testing.T) {
		ns := natstest.Start(t)
		js, err := jetstream.New(ns.Conn(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, sc := range []jetstream.StreamConfig{
			{Name: "WIDE", Subjects: []string{"wide.>"}, Storage: jetstream.FileStorage, Duplicates: 5 * time.Minute},
			{Name: "MEM", Subjects: []string{"mem.memory.>"}, Storage: jetstream.MemoryStorage, Duplicates: 5 * time.Minute},
			{Name: "SHORT", Subjects: []string{"short.memory.>"}, Storage: jetstream.FileStorage, Duplicates: 30 * time.Second},
			{Name: "GOOD", Subjects: []string{"good.memory.>", "good.edge.>", "good.gallery.>", "good.sync.>", "good.reconcile.>"}, Storage: jetstream.FileStorage, Duplicates: 5 * time.Minute, MaxBytes: 1 << 20},
		} {
			if _, err := js.CreateStream(ctx, sc); err != nil {
				t.Fatal(err)
			}
		}
		cfg := func(stream, prefix string) config.Config {
			return load(t, map[string]string{"EDGESYNC_STREAM": stream, "EDGESYNC_SUBJECT_PREFIX": prefix})
		}
		expect(t, checkStream(ctx, js, cfg("WIDE", "wide")), Fail, "captures the request-reply subject wide.admin.reconcile")
		expect(t, checkStream(ctx, js, cfg("MEM", "mem")), Fail, "file storage")
		expect(t, checkStream(ctx, js, cfg("SHORT", "short")), Fail, "--dupe-window")
		expect(t, checkStream(ctx, js, cfg("GOOD", "good")), Warn, "--replicas 3")
		expect(t, checkStream(ctx, js, cfg("NEW", "good")), Fail, "stream GOOD already captures good.memory.>")
	})

	t.Run("permissions", func(t *testing.T) {
		everything := &server.SubjectPermission{Allow: []string{">"}}
		ns := natstest.StartUsers(t,
			&server.User{Username: "full", Password: "fullpw123"},
			// Publishes events, but cannot receive on _INBOX.> (so no
			// request-reply) nor subscribe to the admin subject.
			&server.User{Username: "narrow", Password: "narrowpw123", Permissions: &server.Permissions{
				Publish:   everything,
				Subscribe: &server.SubjectPermission{Allow: []string{"edgesync.memory.>"}},
			}},
			// May publish memory events only.
			&server.User{Username: "memonly", Password: "memonlypw123", Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{"edgesync.memory.>", "$JS.API.>", "_INBOX.>", "$SYS.REQ.USER.INFO"}},
				Subscribe: everything,
			}},
			// Everything it needs, but it may not ask for its own permissions.
			&server.User{Username: "noinfo", Password: "noinfopw123", Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{"edgesync.>", "$JS.API.>", "_INBOX.>"}},
				Subscribe: &server.SubjectPermission{Allow: []string{"edgesync.admin.>", "_INBOX.>"}},
			}},
		)
		hostport := strings.TrimPrefix(ns.URL(), "nats://")
		env := func(user, pw string) map[string]string {
			e := map[string]string{"EDGESYNC_NATS_URL": "nats://" + user + ":" + pw + "@" + hostport}
			for k, v := range base {
				e[k] = v
			}
			return e
		}
		full := byCheck(Run(ctx, load(t, env("full", "fullpw123"))))
		expect(t, full["nats"], Pass, "connected")
		expect(t, full["nats_permissions"], Pass, "allowed")
		narrow := byCheck(Run(ctx, load(t, env("narrow", "narrowpw123"))))
		expect(t, narrow["nats"], Pass, "connected")
		expect(t, narrow["nats_permissions"], Fail, "_INBOX.>")
		memOnly := byCheck(Run(ctx, load(t, env("memonly", "memonlypw123"))))
		expect(t, memOnly["nats_permissions"], Fail, "publish to edgesync.edge.> is not allowed")
		noInfo := byCheck(Run(ctx, load(t, env("noinfo", "noinfopw123"))))
		expect(t, noInfo["nats_permissions"], Warn, "$SYS.REQ.USER.INFO")
	})
}

// TestChecks_LocalAndRemote: the data directory, ICP and the blob host.
func TestChecks_LocalAndRemote(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	expect(t, checkDataDir(load(t, map[string]string{"EDGESYNC_DATA_DIR": filepath.Join(file, "data")})), Fail, "not writable")
	expect(t, checkDataDir(load(t, map[string]string{"EDGESYNC_DATA_DIR": t.TempDir(), "EDGESYNC_ASSET_MAX_BYTES": "1152921504606846976"})), Fail, "less than EDGESYNC_ASSET_MAX_BYTES")
	dead := "http://" + closedPort(t)
	expect(t, checkICP(ctx, load(t, map[string]string{"EDGESYNC_ICP_URL": dead, "EDGESYNC_ICP_CANISTER_ID": "not-a-principal"})), Fail, "is not a principal")
	expect(t, checkICP(ctx, load(t, map[string]string{"EDGESYNC_ICP_URL": dead, "EDGESYNC_ICP_CANISTER_ID": "rrkah-fqaaa-aaaaa-aaaaq-cai"})), Fail, "unreachable")
	expect(t, checkICP(ctx, load(t, map[string]string{})), Skip, "mirror is off")
	// A replica that answers, but not for this canister.
	replica := icpreplica.StartTest(t, icpreplica.Config{})
	expect(t, checkICP(ctx, load(t, map[string]string{"EDGESYNC_ICP_URL": replica.URL(), "EDGESYNC_ICP_CANISTER_ID": "rrkah-fqaaa-aaaaa-aaaaq-cai", "EDGESYNC_ICP_FETCH_ROOT_KEY": "true"})), Fail, "does not answer a status query")
	expect(t, checkICP(ctx, load(t, map[string]string{"EDGESYNC_ICP_URL": replica.URL(), "EDGESYNC_ICP_CANISTER_ID": replica.CanisterID().String(), "EDGESYNC_ICP_FETCH_ROOT_KEY": "true"})), Pass, "answers queries")
	expect(t, checkBlob(ctx, load(t, map[string]string{"EDGESYNC_BLOB_URL": dead})), Fail, "unreachable")
	expect(t, checkBlob(ctx, load(t, map[string]string{})), Warn, "EDGESYNC_BLOB_URL is empty")
}

// startPoolerDouble starts a TCP proxy in front of target that behaves like
// PgBouncer (< 1.23) where it matters to doctor: it answers an SSLRequest
// with 'N' and refuses a startup message that asks for replication with
// "unsupported startup parameter: replication"; everything else is passed
// through. It returns the proxy's host:port.
func startPoolerDouble(t *testing.T, target string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go poolerConn(c, target)
		}
	}()
	return l.Addr().String()
}

func poolerConn(c net.Conn, target string) {
	defer c.Close()
	readMsg := func() ([]byte, error) {
		var hdr [4]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return nil, err
		}
		n := int(binary.BigEndian.Uint32(hdr[:]))
		if n < 8 || n > 1<<16 {
			return nil, errors.New("bad startup length")
		}
		body := make([]byte, n-4)
		if _, err := io.ReadFull(c, body); err != nil {
			return nil, err
		}
		return append(hdr[:], body...), nil
	}
	msg, err := readMsg()
	if err != nil {
		return
	}
	if binary.BigEndian.Uint32(msg[4:8]) == 80877103 { // SSLRequest
		if _, err := c.Write([]byte{'N'}); err != nil {
			return
		}
		if msg, err = readMsg(); err != nil {
			return
		}
	}
	for _, kv := range bytes.Split(msg[8:], []byte{0}) {
		if string(kv) == "replication" {
			var e bytes.Buffer
			for _, f := range []string{"SFATAL", "VFATAL", "C08P01", "Munsupported startup parameter: replication"} {
				e.WriteString(f)
				e.WriteByte(0)
			}
			e.WriteByte(0)
			out := []byte{'E', 0, 0, 0, 0}
			binary.BigEndian.PutUint32(out[1:], uint32(e.Len()+4))
			_, _ = c.Write(append(out, e.Bytes()...))
			return
		}
	}
	pg, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer pg.Close()
	if _, err := pg.Write(msg); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(pg, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, pg); done <- struct{}{} }()
	<-done
}

// TestChecks_PooledConnection: through a PgBouncer-like pooler every SQL
// check still passes, and direct_connection fails with the fix.
func TestChecks_PooledConnection(t *testing.T) {
	ctx := context.Background()
	url := pgtest.New(t)
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = startPoolerDouble(t, u.Host)
	pooled := u.String()
	db := connect(t, pooled)
	expect(t, checkWalLevel(ctx, db), Pass, "logical")
	expect(t, checkDirectConnection(ctx, db, pooled), Fail, "unsupported startup parameter: replication")
	expect(t, checkDirectConnection(ctx, db, pooled), Fail, "not at PgBouncer")
	expect(t, checkDirectConnection(ctx, connect(t, url), url), Pass, "direct session")
}
