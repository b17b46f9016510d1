package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"
)

//go:embed sql/*.sql
var embedded embed.FS

// VersionTable records applied migrations. It is ours, so an app that uses
// goose itself keeps its own goose_db_version untouched.
const VersionTable = "edgesync_schema_migrations"

// lockID is the advisory lock key that serialises migration runs
// (hashtext('edgesync:migrate')); distinct from goose's default.
const lockID int64 = 0x6564676573796e63 // "edgesync"

// ErrNothingToRollBack is returned by Down when no migration is applied.
var ErrNothingToRollBack = errors.New("no migration is applied: nothing to roll back")

// Migration is one step and its state in a database.
type Migration struct {
	Version   int64     `json:"version"`
	Name      string    `json:"name"`
	AppSchema bool      `json:"app_schema"`
	Applied   bool      `json:"applied"`
	AppliedAt time.Time `json:"applied_at,omitzero"`
}

// Result is one migration that was applied or rolled back.
type Result struct {
	Version   int64         `json:"version"`
	Name      string        `json:"name"`
	Direction string        `json:"direction"`
	Duration  time.Duration `json:"duration_ns"`
}

func (r Result) String() string {
	return fmt.Sprintf("%-4s %s (%s)", r.Direction, r.Name, r.Duration.Round(time.Millisecond))
}

// isApp reports whether a migration file belongs to the reference app schema.
func isApp(name string) bool { return strings.Contains(path.Base(name), "_app_") }

func sqlFS() fs.FS {
	sub, err := fs.Sub(embedded, "sql")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}

// appVersions lists the versions of the reference app schema migrations.
func appVersions() []int64 {
	var vs []int64
	entries, _ := fs.ReadDir(sqlFS(), ".")
	for _, e := range entries {
		if !isApp(e.Name()) {
			continue
		}
		if v, err := goose.NumericComponent(e.Name()); err == nil {
			vs = append(vs, v)
		}
	}
	return vs
}

func provider(db *sql.DB, appSchema bool) (*goose.Provider, error) {
	store, err := database.NewStore(database.DialectPostgres, VersionTable)
	if err != nil {
		return nil, err
	}
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID), lock.WithLockTimeout(1, 600))
	if err != nil {
		return nil, err
	}
	opts := []goose.ProviderOption{
		goose.WithStore(store),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
		// The app schema steps sit between core steps; an install without
		// them that later adds them applies them out of order, on purpose.
		goose.WithAllowOutofOrder(true),
	}
	if !appSchema {
		opts = append(opts, goose.WithExcludeVersions(appVersions()))
	}
	return goose.NewProvider(goose.DialectCustom, db, sqlFS(), opts...)
}

func results(rs []*goose.MigrationResult) []Result {
	out := make([]Result, 0, len(rs))
	for _, r := range rs {
		out = append(out, Result{Version: r.Source.Version, Name: path.Base(r.Source.Path), Direction: r.Direction, Duration: r.Duration})
	}
	return out
}

// Up applies every pending migration (the app schema ones only with
// appSchema). Applying twice is a no-op.
func Up(ctx context.Context, db *sql.DB, appSchema bool) ([]Result, error) {
	p, err := provider(db, appSchema)
	if err != nil {
		return nil, err
	}
	rs, err := p.Up(ctx)
	return results(rs), unwrap(err)
}

// Down rolls back the most recently applied migration that this mode manages.
// Without appSchema the app schema steps are left alone; if the newest applied
// step is one of them, Down refuses and says to pass --app-schema.
func Down(ctx context.Context, db *sql.DB, appSchema bool) (Result, error) {
	st, err := Status(ctx, db, true)
	if err != nil {
		return Result{}, err
	}
	var last *Migration
	for i := range st {
		if st[i].Applied && (last == nil || st[i].Version > last.Version) {
			last = &st[i]
		}
	}
	if last == nil {
		return Result{}, ErrNothingToRollBack
	}
	if last.AppSchema && !appSchema {
		return Result{}, fmt.Errorf("the newest applied migration %s belongs to the reference app schema: pass --app-schema to roll it back", last.Name)
	}
	p, err := provider(db, appSchema)
	if err != nil {
		return Result{}, err
	}
	r, err := p.ApplyVersion(ctx, last.Version, false)
	if err != nil {
		return Result{}, unwrap(err)
	}
	return results([]*goose.MigrationResult{r})[0], nil
}

// Status lists the migrations (the app schema ones only with appSchema) and
// whether each is applied.
func Status(ctx context.Context, db *sql.DB, appSchema bool) ([]Migration, error) {
	p, err := provider(db, appSchema)
	if err != nil {
		return nil, err
	}
	st, err := p.Status(ctx)
	if err != nil {
		return nil, unwrap(err)
	}
	out := make([]Migration, 0, len(st))
	for _, s := range st {
		out = append(out, Migration{
			Version:   s.Source.Version,
			Name:      path.Base(s.Source.Path),
			AppSchema: isApp(s.Source.Path),
			Applied:   s.State == goose.StateApplied,
			AppliedAt: s.AppliedAt,
		})
	}
	return out, nil
}

// unwrap removes goose's partial-error wrapper so callers see the database
// error itself (and can classify it).
func unwrap(err error) error {
	var pe *goose.PartialError
	if errors.As(err, &pe) && pe.Err != nil {
		name := ""
		if pe.Failed != nil && pe.Failed.Source != nil {
			name = path.Base(pe.Failed.Source.Path)
		}
		return fmt.Errorf("migration %s: %w", name, pe.Err)
	}
	return err
}
