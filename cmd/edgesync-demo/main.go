// Command edgesync-demo is `make demo`: it prints the storage console's URL
// first, then starts a throwaway PostgreSQL from the machine's binaries, the
// local ICP replica double and a stand-in blob host, loads sample memories and
// galleries, runs `edgesync run` in-process (with its embedded NATS server),
// and narrates what happens while it changes rows and stores a gallery
// forever. Afterwards the daemon keeps running for the console and the curl
// session of docs/api.md until Ctrl-C.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap/zapcore"

	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/daemon"
	"github.com/edgesync/edgesync/internal/doctor"
	"github.com/edgesync/edgesync/internal/icpreplica"
	"github.com/edgesync/edgesync/internal/pgtest"
	"github.com/edgesync/edgesync/migrations"
)

const token = "demo-token"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	exit := flag.Bool("exit", false, "stop after the scripted scenario instead of serving until Ctrl-C")
	addr := flag.String("addr", "127.0.0.1:8080", "HTTP address of the daemon (a free port is used if it is taken)")
	flag.Parse()
	if err := run(ctx, os.Stdout, *addr, *exit); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "edgesync-demo:", err)
		os.Exit(1)
	}
}

// demo holds what the scenario talks to.
type demo struct {
	out   io.Writer
	pool  *pgxpool.Pool
	base  string // daemon HTTP base URL
	blobs string // blob host base URL
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "\n\033[1m==> "+format+"\033[0m\n", args...)
}

// syncWriter serialises the narration and the event lines written from the
// NATS subscription's goroutine.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func run(ctx context.Context, out io.Writer, addr string, exitAfter bool) error {
	out = &syncWriter{w: out}
	d := &demo{out: out}
	// The console's address comes first, so a person can open it while the rest starts.
	addr, err := consoleAddr(addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "storage console: http://%s/ (actions ask for the admin token %q)\n", addr, token)
	d.say("starting a throwaway PostgreSQL (wal_level=logical) from this machine's binaries")
	cluster, err := pgtest.Start()
	if err != nil {
		return err
	}
	defer cluster.Close()
	dbURL, err := cluster.CreateDB(ctx, "edgesync_demo")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "    %s\n", dbURL)
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		return err
	}
	rs, err := migrations.Up(ctx, db, true)
	db.Close()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "    edgesync migrate up --app-schema: %d migrations applied\n", len(rs))
	if d.pool, err = pgxpool.New(ctx, dbURL); err != nil {
		return err
	}
	defer d.pool.Close()

	blobs, err := startBlobHost()
	if err != nil {
		return err
	}
	defer blobs.Close()
	replica, err := icpreplica.New(icpreplica.Config{})
	if err != nil {
		return err
	}
	if err := replica.Listen(); err != nil {
		return err
	}
	defer replica.Stop() //nolint:errcheck // demo teardown
	d.say("local ICP replica double at %s (canister %s); blob host at %s", replica.URL(), replica.CanisterID(), blobs.Addr)

	d.say("sample data before the daemon's first start (the initial snapshot gives it edges)")
	if err := d.seed(ctx, blobs.Addr); err != nil {
		return err
	}

	dataDir, err := os.MkdirTemp("", "edgesync-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dataDir)
	cfg := config.Default()
	cfg.DatabaseURL, cfg.HTTPAddr, cfg.DataDir, cfg.AdminToken = dbURL, addr, dataDir, token
	cfg.ICPURL, cfg.ICPCanisterID, cfg.ICPFetchRootKey = replica.URL(), replica.CanisterID().String(), true
	cfg.BlobURL = blobs.Addr
	// The stand-in blob host listens on loopback, which the mirror refuses unless the allow-list
	// names that address explicitly.
	cfg.AssetHosts = strings.TrimPrefix(blobs.Addr, "http://")
	cfg.ReconcileInterval = 0
	cfg.HeartbeatInterval = 5 * time.Second
	cfg.LogFormat, cfg.LogLevel = "console", "warn"
	if err := cfg.Validate(); err != nil {
		return err
	}
	log, err := daemon.NewLogger(cfg, zapcore.Lock(os.Stderr))
	if err != nil {
		return err
	}
	dctx, stopDaemon := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDaemon()
	dm, err := daemon.New(dctx, cfg, log)
	if err != nil {
		return err
	}
	d.base = "http://" + dm.Addr()
	done := make(chan error, 1)
	go func() { done <- dm.Run(dctx) }()
	d.say("edgesync run: HTTP %s, embedded NATS, ICP mirror on (admin token %q)", d.base, token)

	nc, err := nats.Connect(dm.NATSURL())
	if err != nil {
		return err
	}
	defer nc.Close()
	sub, err := nc.Subscribe("edgesync.>", func(m *nats.Msg) { fmt.Fprintln(out, "    event  "+summarize(m)) })
	if err != nil {
		return err
	}
	defer sub.Unsubscribe() //nolint:errcheck

	if err := d.scenario(ctx, blobs.Addr); err != nil {
		return err
	}
	d.say("edgesync doctor against this setup (a deployment's checklist; see docs/deploy.md)")
	dc := cfg
	dc.NATSURL = dm.NATSURL()
	doctor.Print(out, doctor.Run(ctx, dc))
	if !exitAfter {
		d.say("the daemon keeps running: open the storage console at %s/ or try the curl commands of docs/api.md (EDGESYNC_ADMIN_TOKEN=%s); Ctrl-C stops everything", d.base, token)
		<-ctx.Done()
	}
	stopDaemon()
	select {
	case err := <-done:
		if err != nil {
			return err
		}
	case <-time.After(15 * time.Second):
		return errors.New("the daemon did not stop within 15s")
	}
	fmt.Fprintln(out, "\nstopped cleanly")
	return nil
}

// consoleAddr is addr when it is free, else a free loopback port: the
// address is printed before the daemon binds it.
func consoleAddr(addr string) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return "", fmt.Errorf("find a free port for the daemon's HTTP server: %w", err)
		}
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// summarize prints one event as a short line.
func summarize(m *nats.Msg) string {
	var e struct {
		Op         string  `json:"op"`
		MemoryID   *string `json:"memory_id"`
		Backend    string  `json:"backend"`
		Artifact   string  `json:"artifact"`
		GalleryID  string  `json:"gallery_id"`
		OldStatus  *string `json:"old_status"`
		NewStatus  string  `json:"new_status"`
		BytesDone  int64   `json:"bytes_done"`
		BytesTotal int64   `json:"bytes_total"`
		After      *struct {
			SyncState string `json:"sync_state"`
			Present   *bool  `json:"present"`
		} `json:"after"`
	}
	_ = json.Unmarshal(m.Data, &e)
	id := ""
	if e.MemoryID != nil && len(*e.MemoryID) == 36 {
		id = "…" + (*e.MemoryID)[32:]
	}
	s := fmt.Sprintf("%-40s", m.Subject)
	switch {
	case strings.Contains(m.Subject, ".edge."):
		s += fmt.Sprintf(" memory %s %s", id, e.Artifact)
		if e.After != nil {
			s += " sync=" + e.After.SyncState
			if e.After.Present != nil {
				s += fmt.Sprintf(" present=%v", *e.After.Present)
			}
		}
	case strings.Contains(m.Subject, ".memory."):
		s += " memory " + id
	case strings.HasSuffix(m.Subject, ".gallery.status"):
		old := "-"
		if e.OldStatus != nil {
			old = *e.OldStatus
		}
		s += fmt.Sprintf(" gallery …%s: %s -> %s", e.GalleryID[max(0, len(e.GalleryID)-4):], old, e.NewStatus)
	case strings.HasSuffix(m.Subject, ".sync.progress"):
		s += fmt.Sprintf(" memory %s %d/%d bytes", id, e.BytesDone, e.BytesTotal)
	}
	return s
}

// blob host: serves deterministic bytes for /<name>?size=N, as Vercel Blob
// would serve the uploaded files.
func startBlobHost() (*http.Server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			w.WriteHeader(http.StatusOK)
			return
		}
		var n int
		if _, err := fmt.Sscan(r.URL.Query().Get("size"), &n); err != nil || n <= 0 || n > 64<<20 {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(n))
		_, _ = w.Write(blob(r.URL.Path, n))
	})}
	go func() { _ = srv.Serve(l) }()
	srv.Addr = "http://" + l.Addr().String()
	return srv, nil
}

func blob(name string, n int) []byte {
	seed := sha256.Sum256([]byte(name))
	return bytes.Repeat(seed[:], n/32+1)[:n]
}

func (d *demo) exec(ctx context.Context, sql string, args ...any) error {
	_, err := d.pool.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", strings.Fields(sql)[0], err)
	}
	return nil
}

const (
	galleryTrip    = "a0000000-0000-4000-8000-000000000001"
	galleryRecipes = "a0000000-0000-4000-8000-000000000002"
	owner          = "b0000000-0000-4000-8000-000000000001"
)

func (d *demo) seed(ctx context.Context, blobs string) error {
	d.blobs = blobs
	stmts := []string{
		`INSERT INTO galleries (id, owner_id, title) VALUES ('` + galleryTrip + `', '` + owner + `', 'Summer trip'), ('` + galleryRecipes + `', '` + owner + `', 'Recipes')`,
		`INSERT INTO images (id, owner_id, title, url, size_bytes, mime_type) VALUES
			('c0000000-0000-4000-8000-000000000001', '` + owner + `', 'beach', '` + blobs + `/beach.jpg?size=180000', 180000, 'image/jpeg'),
			('c0000000-0000-4000-8000-000000000002', '` + owner + `', 'sunset', '` + blobs + `/sunset.jpg?size=3200000', 3200000, 'image/jpeg')`,
		`INSERT INTO videos (id, owner_id, title, url, size_bytes, mime_type) VALUES
			('c0000000-0000-4000-8000-000000000003', '` + owner + `', 'waves', '` + blobs + `/waves.mp4?size=900000', 900000, 'video/mp4')`,
		`INSERT INTO notes (id, owner_id, title, body) VALUES
			('c0000000-0000-4000-8000-000000000004', '` + owner + `', 'diary', 'We swam every day.'),
			('c0000000-0000-4000-8000-000000000005', '` + owner + `', 'pancakes', 'Flour, eggs, milk.')`,
		`INSERT INTO gallery_items (gallery_id, memory_id, memory_type, position) VALUES
			('` + galleryTrip + `', 'c0000000-0000-4000-8000-000000000001', 'image', 1),
			('` + galleryTrip + `', 'c0000000-0000-4000-8000-000000000002', 'image', 2),
			('` + galleryTrip + `', 'c0000000-0000-4000-8000-000000000003', 'video', 3),
			('` + galleryTrip + `', 'c0000000-0000-4000-8000-000000000004', 'note', 4),
			('` + galleryRecipes + `', 'c0000000-0000-4000-8000-000000000005', 'note', 1)`,
	}
	for _, s := range stmts {
		if err := d.exec(ctx, s); err != nil {
			return err
		}
	}
	fmt.Fprintln(d.out, "    2 galleries, 3 media memories (one asset is 3.2 MB: it goes to ICP in chunks) and 2 notes")
	return nil
}

func (d *demo) scenario(ctx context.Context, blobs string) error {
	if err := d.waitFor(ctx, "the initial snapshot", func() (bool, error) {
		var n int
		err := d.pool.QueryRow(ctx, `SELECT count(*) FROM storage_edges`).Scan(&n)
		return n >= 8, err
	}); err != nil {
		return err
	}
	d.say("storage_edges after the snapshot")
	if err := d.printEdges(ctx); err != nil {
		return err
	}

	d.say("the app changes rows: a new image, a URL change, a URL removed, a note deleted")
	steps := []string{
		`INSERT INTO images (id, owner_id, title, url, size_bytes) VALUES ('c0000000-0000-4000-8000-000000000006', '` + owner + `', 'palm', '` + blobs + `/palm.jpg?size=50000', 50000)`,
		`UPDATE images SET url = '` + blobs + `/beach-v2.jpg?size=190000', size_bytes = 190000 WHERE id = 'c0000000-0000-4000-8000-000000000001'`,
		`UPDATE images SET url = NULL WHERE id = 'c0000000-0000-4000-8000-000000000006'`,
		`DELETE FROM notes WHERE id = 'c0000000-0000-4000-8000-000000000005'`,
	}
	for _, s := range steps {
		line := strings.ReplaceAll(strings.Join(strings.Fields(s), " "), blobs, "")
		fmt.Fprintln(d.out, "    sql    "+line)
		if err := d.exec(ctx, s); err != nil {
			return err
		}
		time.Sleep(400 * time.Millisecond) // pacing for a person to read the events
	}
	if err := d.waitFor(ctx, "edges in step", func() (bool, error) {
		var n int
		err := d.pool.QueryRow(ctx, `SELECT count(*) FROM storage_edges WHERE memory_id = 'c0000000-0000-4000-8000-000000000005'`).Scan(&n)
		return n == 0, err
	}); err != nil {
		return err
	}
	d.say("storage_edges now")
	if err := d.printEdges(ctx); err != nil {
		return err
	}
	if err := d.printGalleries(ctx); err != nil {
		return err
	}

	d.say("Store Forever of the 'Summer trip' gallery: POST /api/galleries/%s/store-forever", galleryTrip)
	body, status, err := d.call(ctx, http.MethodPost, "/api/galleries/"+galleryTrip+"/store-forever")
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "    HTTP %d %s\n", status, strings.TrimSpace(string(body)))
	if err := d.waitFor(ctx, "the gallery stored forever", func() (bool, error) {
		var st string
		err := d.pool.QueryRow(ctx, `SELECT status FROM gallery_presence WHERE gallery_id = $1`, galleryTrip).Scan(&st)
		return st == "stored_forever", err
	}); err != nil {
		return err
	}
	if err := d.printGalleries(ctx); err != nil {
		return err
	}
	d.say("ICP edges of the gallery's memories (content hash and size verified by the canister)")
	if err := d.printEdgesWhere(ctx, `backend = 'icp-canister'`); err != nil {
		return err
	}

	d.say("reconcile: POST /admin/reconcile?dry_run=true")
	body, status, err = d.call(ctx, http.MethodPost, "/admin/reconcile?dry_run=true")
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "    HTTP %d %s\n", status, strings.TrimSpace(string(body)))
	var started struct {
		RunID string `json:"run_id"`
	}
	_ = json.Unmarshal(body, &started)
	return d.waitFor(ctx, "the reconcile report", func() (bool, error) {
		b, _, err := d.call(ctx, http.MethodGet, "/admin/reconcile/"+started.RunID)
		if err != nil {
			return false, err
		}
		if strings.Contains(string(b), `"state":"running"`) {
			return false, nil
		}
		fmt.Fprintf(d.out, "    %s\n", strings.TrimSpace(string(b)))
		return true, nil
	})
}

func (d *demo) call(ctx context.Context, method, path string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, method, d.base+path, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return b, resp.StatusCode, err
}

func (d *demo) waitFor(ctx context.Context, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		ok, err := cond()
		if err == nil && ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for %s (last error: %v)", what, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (d *demo) printEdges(ctx context.Context) error { return d.printEdgesWhere(ctx, "true") }

func (d *demo) printEdgesWhere(ctx context.Context, where string) error {
	rows, err := d.pool.Query(ctx, `SELECT '…' || right(memory_id::text, 4), memory_type::text, artifact::text, backend::text, present, sync_state::text,
		coalesce(left(location, 60), ''), coalesce(size_bytes::text, ''), coalesce(left(content_hash, 16), '')
		FROM storage_edges WHERE `+where+` ORDER BY memory_id, artifact, backend`)
	if err != nil {
		return err
	}
	defer rows.Close()
	tw := tabwriter.NewWriter(d.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "    MEMORY\tTYPE\tARTIFACT\tBACKEND\tPRESENT\tSYNC\tLOCATION\tSIZE\tHASH")
	for rows.Next() {
		var id, typ, art, be, st, loc, size, hash string
		var present bool
		if err := rows.Scan(&id, &typ, &art, &be, &present, &st, &loc, &size, &hash); err != nil {
			return err
		}
		loc = strings.TrimPrefix(loc, d.blobs)
		fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\t%v\t%s\t%s\t%s\t%s\n", id, typ, art, be, present, st, loc, size, hash)
	}
	return tw.Flush()
}

func (d *demo) printGalleries(ctx context.Context) error {
	rows, err := d.pool.Query(ctx, `SELECT g.title, p.status, p.total_memories, p.icp_complete_memories
		FROM gallery_presence p JOIN galleries g ON g.id = p.gallery_id ORDER BY g.title`)
	if err != nil {
		return err
	}
	defer rows.Close()
	tw := tabwriter.NewWriter(d.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "    GALLERY\tSTATUS\tMEMORIES\tON ICP")
	for rows.Next() {
		var title, status string
		var total, complete int
		if err := rows.Scan(&title, &status, &total, &complete); err != nil {
			return err
		}
		fmt.Fprintf(tw, "    %s\t%s\t%d\t%d\n", title, status, total, complete)
	}
	return tw.Flush()
}
