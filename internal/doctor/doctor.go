package doctor

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/config"
)

// Status is a check's verdict.
type Status string

// The verdicts: only fail makes doctor exit 1; skip is a check that does
// not apply (the ICP mirror is off) or cannot run (its backend is down,
// which its own check already failed).
const (
	Pass Status = "pass"
	Warn Status = "warn"
	Fail Status = "fail"
	Skip Status = "skip"
)

// Result is one check's line.
type Result struct {
	Check  string `json:"check"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

func pass(check, format string, args ...any) Result {
	return Result{Check: check, Status: Pass, Detail: fmt.Sprintf(format, args...)}
}

func skip(check, why string) Result { return Result{Check: check, Status: Skip, Detail: why} }

func warn(check, detail, fix string) Result {
	return Result{Check: check, Status: Warn, Detail: detail, Fix: fix}
}

func fail(check, detail, fix string) Result {
	return Result{Check: check, Status: Fail, Detail: detail, Fix: fix}
}

// Failed reports whether any result failed.
func Failed(rs []Result) bool {
	for _, r := range rs {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

// env is what the checks share: the configuration and the connections
// that could be opened (nil when their check failed).
type env struct {
	cfg config.Config
	db  *pgx.Conn
	nc  *natsgo.Conn
	js  jetstream.JetStream
	// natsErrs collects the asynchronous errors of nc (permission
	// violations arrive that way).
	natsErrs chan error
}

// Run runs every check in order and returns their results. It opens its own
// connections and closes them; it never changes the database or the stream.
func Run(ctx context.Context, cfg config.Config) []Result {
	e := &env{cfg: cfg, natsErrs: make(chan error, 64)}
	defer e.close()
	var out []Result
	add := func(rs ...Result) { out = append(out, rs...) }

	add(e.connectDB(ctx))
	if e.db == nil {
		for _, c := range []string{"wal_level", "replication_slots", "replication_role", "publication", "app_schema", "migrations", "direct_connection"} {
			add(skip(c, "needs the database"))
		}
	} else {
		add(checkWalLevel(ctx, e.db), checkSlots(ctx, e.db, cfg.Slot), checkReplicationRole(ctx, e.db))
		add(checkPublication(ctx, e.db, cfg), checkAppSchema(ctx, e.db, cfg), checkMigrations(ctx, cfg.DatabaseURL))
		add(checkDirectConnection(ctx, e.db, cfg.DatabaseURL))
	}

	add(e.connectNATS(ctx))
	if e.nc == nil {
		add(skip("stream", "needs NATS"), skip("nats_permissions", "needs NATS"))
	} else {
		add(checkStream(ctx, e.js, cfg), e.checkPermissions(ctx))
	}
	add(checkDataDir(cfg), checkICP(ctx, cfg), checkBlob(ctx, cfg))
	for i := range out {
		out[i].Detail, out[i].Fix = cfg.Scrub(out[i].Detail), cfg.Scrub(out[i].Fix)
	}
	return out
}

func (e *env) close() {
	if e.db != nil {
		e.db.Close(context.Background())
	}
	if e.nc != nil {
		e.nc.Close()
	}
}

func (e *env) connectDB(ctx context.Context) Result {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.cfg.DatabaseURL)
	if err != nil {
		return fail("database", "cannot connect: "+oneLine(err), "check EDGESYNC_DATABASE_URL (host, port, user, password, sslmode) and that the database accepts connections from here")
	}
	var version, user, db string
	if err := c.QueryRow(ctx, "SELECT current_setting('server_version'), current_user, current_database()").Scan(&version, &user, &db); err != nil {
		c.Close(context.Background())
		return fail("database", "connected, but a first query failed: "+oneLine(err), "check that the role may log in and read the database")
	}
	e.db = c
	return pass("database", "PostgreSQL %s, database %s as %s", version, db, user)
}

func (e *env) connectNATS(ctx context.Context) Result {
	url := e.cfg.NATSURL
	if url == "" {
		if e.cfg.InKubernetes() && !e.cfg.NATSEmbedded {
			return fail("nats", "EDGESYNC_NATS_URL is empty inside Kubernetes: `run` refuses to start", "set EDGESYNC_NATS_URL to your NATS server (or EDGESYNC_NATS_EMBEDDED=true for a development pod)")
		}
		e.natsErrs = nil
		return Result{Check: "nats", Status: Skip, Detail: "EDGESYNC_NATS_URL is empty: `run` starts an embedded development server in EDGESYNC_DATA_DIR (not for production)"}
	}
	opts := []natsgo.Option{natsgo.Name("edgesync-doctor"), natsgo.Timeout(5 * time.Second), natsgo.NoReconnect(),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) {
			select {
			case e.natsErrs <- err:
			default:
			}
		})}
	if e.cfg.NATSCredsFile != "" {
		opts = append(opts, natsgo.UserCredentials(e.cfg.NATSCredsFile))
	}
	nc, err := natsgo.Connect(url, opts...)
	if err != nil {
		return fail("nats", "cannot connect to "+config.RedactURL(url)+": "+oneLine(err), "check EDGESYNC_NATS_URL, EDGESYNC_NATS_CREDS and that NATS is reachable from here (NetworkPolicy egress to port 4222)")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fail("nats", oneLine(err), "")
	}
	e.nc, e.js = nc, js
	return pass("nats", "connected to %s (server %s)", config.RedactURL(nc.ConnectedUrl()), nc.ConnectedServerVersion())
}

// oneLine flattens an error to one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// Print writes one line per result and a summary.
func Print(w io.Writer, rs []Result) {
	counts := map[Status]int{}
	for _, r := range rs {
		counts[r.Status]++
		line := fmt.Sprintf("%-4s  %-18s %s", strings.ToUpper(string(r.Status)), r.Check, r.Detail)
		if r.Fix != "" {
			line += " — fix: " + r.Fix
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintf(w, "%d pass, %d warn, %d fail, %d skipped\n", counts[Pass], counts[Warn], counts[Fail], counts[Skip])
}
