package doctor

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for the migrations status

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/migrations"
)

func checkWalLevel(ctx context.Context, db *pgx.Conn) Result {
	var level string
	if err := db.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return fail("wal_level", "cannot read it: "+oneLine(err), "")
	}
	if level != "logical" {
		return fail("wal_level", fmt.Sprintf("wal_level is %q, logical replication needs logical", level),
			"set wal_level = logical in postgresql.conf and restart PostgreSQL (Neon: enable logical replication in the project settings; RDS: rds.logical_replication = 1)")
	}
	return pass("wal_level", "logical")
}

func checkSlots(ctx context.Context, db *pgx.Conn, slot string) Result {
	var maxSlots, usedSlots, maxSenders, usedSenders int
	var exists bool
	err := db.QueryRow(ctx, `SELECT current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots),
			EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1),
			current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_stat_replication)`, slot).
		Scan(&maxSlots, &usedSlots, &exists, &maxSenders, &usedSenders)
	if err != nil {
		return fail("replication_slots", "cannot read them: "+oneLine(err), "")
	}
	if !exists && usedSlots >= maxSlots {
		return fail("replication_slots", fmt.Sprintf("all %d of max_replication_slots are in use and slot %s does not exist yet", maxSlots, slot),
			"raise max_replication_slots (restart needed) or drop an unused slot (SELECT pg_drop_replication_slot('name'))")
	}
	if usedSenders >= maxSenders {
		return fail("replication_slots", fmt.Sprintf("all %d of max_wal_senders are in use", maxSenders),
			"raise max_wal_senders (restart needed) or stop an unused replication client")
	}
	state := "will be created by `edgesync run`"
	if exists {
		state = "exists"
	}
	return pass("replication_slots", "slot %s %s; %d of %d slots and %d of %d WAL senders in use", slot, state, usedSlots, maxSlots, usedSenders, maxSenders)
}

func checkReplicationRole(ctx context.Context, db *pgx.Conn) Result {
	var role string
	var repl, super bool
	if err := db.QueryRow(ctx, "SELECT rolname, rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&role, &repl, &super); err != nil {
		return fail("replication_role", "cannot read the role: "+oneLine(err), "")
	}
	if !repl && !super {
		return fail("replication_role", fmt.Sprintf("role %s lacks the REPLICATION attribute", role),
			fmt.Sprintf("run ALTER ROLE %s REPLICATION as a superuser (Neon: roles created in the console have it)", ident(role)))
	}
	return pass("replication_role", "role %s may replicate", role)
}

// checkPublication: an existing publication must publish every operation of
// every table, unfiltered; tables it lacks are added by `run` only where the
// role owns them, else an owner must run the SQL printed as the fix.
func checkPublication(ctx context.Context, db *pgx.Conn, cfg config.Config) Result {
	const name = "publication"
	tables := PublishedTables(cfg)
	p, err := cdc.CheckPublication(ctx, db, cfg.Publication, tables)
	if errors.Is(err, cdc.ErrPublicationUnusable) {
		msg := strings.TrimPrefix(err.Error(), cdc.ErrPublicationUnusable.Error()+": ")
		detail, fix, _ := strings.Cut(msg, ": run ")
		return fail(name, detail, "run "+fix)
	}
	if err != nil {
		return fail(name, oneLine(err), "")
	}
	pub := ident(cfg.Publication)
	if len(p.Missing) == 0 {
		return pass(name, "%s publishes insert, update, delete and truncate of all %d tables, unfiltered", cfg.Publication, len(tables))
	}
	var notOwned, quoted []string
	for _, t := range p.Missing {
		var owned, hasPK bool
		var ident string
		err := db.QueryRow(ctx, `SELECT pg_has_role(c.relowner, 'USAGE'), c.relreplident::text,
				EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
			FROM pg_class c WHERE c.oid = to_regclass($1)`, t).Scan(&owned, &ident, &hasPK)
		if errors.Is(err, pgx.ErrNoRows) {
			return fail(name, fmt.Sprintf("table %s does not exist", t), "check EDGESYNC_TABLES, or run `edgesync migrate` (with --app-schema for the reference schema)")
		}
		if err != nil {
			return fail(name, oneLine(err), "")
		}
		if ident == "n" || (ident == "d" && !hasPK) {
			return fail(name, fmt.Sprintf("table %s has no replica identity (no primary key)", t), fmt.Sprintf("add a primary key, or ALTER TABLE %s REPLICA IDENTITY FULL", t))
		}
		quoted = append(quoted, qualified(t))
		if !owned {
			notOwned = append(notOwned, t)
		}
	}
	var canCreate bool
	if err := db.QueryRow(ctx, "SELECT has_database_privilege(current_database(), 'CREATE')").Scan(&canCreate); err != nil {
		return fail(name, oneLine(err), "")
	}
	sqlFix := fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s;", pub, strings.Join(quoted, ", "))
	if !p.Exists {
		sqlFix = fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s;", pub, strings.Join(quoted, ", "))
	}
	if len(notOwned) > 0 || (!p.Exists && !canCreate) {
		why := fmt.Sprintf("the role does not own %s, so `run` cannot add it to publication %s", strings.Join(notOwned, ", "), cfg.Publication)
		if len(notOwned) == 0 {
			why = fmt.Sprintf("publication %s does not exist and the role may not create one in this database", cfg.Publication)
		}
		return fail(name, why, "as the tables' owner run: "+sqlFix)
	}
	if !p.Exists {
		return pass(name, "%s does not exist yet; `run` creates it (the role owns the tables)", cfg.Publication)
	}
	return pass(name, "%s lacks %s; `run` adds them (the role owns them)", cfg.Publication, strings.Join(p.Missing, ", "))
}

// checkAppSchema checks what edgesync assumes of the app's tables.
func checkAppSchema(ctx context.Context, db *pgx.Conn, cfg config.Config) Result {
	var problems []string
	colType := func(table, col string) (string, error) {
		var typ string
		err := db.QueryRow(ctx, `SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
			WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped`, table, col).Scan(&typ)
		if errors.Is(err, pgx.ErrNoRows) {
			return "", nil
		}
		return typ, err
	}
	missingTable := map[string]bool{}
	want := func(table, col string, types ...string) error {
		if missingTable[table] {
			return nil
		}
		var exists bool
		if err := db.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			missingTable[table] = true
			problems = append(problems, fmt.Sprintf("table %s does not exist", table))
			return nil
		}
		typ, err := colType(table, col)
		if err != nil {
			return err
		}
		switch {
		case typ == "":
			problems = append(problems, fmt.Sprintf("%s has no column %s", table, col))
		case !contains(types, typ):
			problems = append(problems, fmt.Sprintf("%s.%s is %s, not %s", table, col, typ, strings.Join(types, " or ")))
		}
		return nil
	}
	var enum bool
	if err := db.QueryRow(ctx, "SELECT to_regtype('memory_type_t') IS NOT NULL").Scan(&enum); err != nil {
		return fail("app_schema", oneLine(err), "")
	}
	if !enum {
		problems = append(problems, "type memory_type_t does not exist")
	}
	for _, t := range cfg.Tables {
		var exists bool
		var pk []string
		err := db.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL,
				COALESCE((SELECT array_agg(a.attname::text) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
					WHERE i.indrelid = to_regclass($1) AND i.indisprimary), '{}')`, t.Name).Scan(&exists, &pk)
		if err != nil {
			return fail("app_schema", oneLine(err), "")
		}
		if !exists {
			problems = append(problems, fmt.Sprintf("table %s (memory type %s) does not exist", t.Name, t.MemoryType))
			continue
		}
		if len(pk) != 1 || pk[0] != "id" {
			problems = append(problems, fmt.Sprintf("%s's primary key is (%s), not (id)", t.Name, strings.Join(pk, ", ")))
		}
		if err := want(t.Name, "id", "uuid"); err != nil {
			return fail("app_schema", oneLine(err), "")
		}
		if t.URLColumn != "" {
			if err := want(t.Name, t.URLColumn, "text", "character varying"); err != nil {
				return fail("app_schema", oneLine(err), "")
			}
		}
		if t.SizeColumn != "" {
			if err := want(t.Name, t.SizeColumn, "bigint", "integer"); err != nil {
				return fail("app_schema", oneLine(err), "")
			}
		}
	}
	// Unqualified, as the pipeline and the API name them: found on the role's
	// search path, not only in public.
	g, gi := domain.GalleriesTable, domain.GalleryItemsTable
	for _, c := range [][3]string{{g, "id", "uuid"}, {gi, "gallery_id", "uuid"},
		{gi, "memory_id", "uuid"}, {gi, "memory_type", "memory_type_t"}} {
		if err := want(c[0], c[1], c[2]); err != nil {
			return fail("app_schema", oneLine(err), "")
		}
	}
	if len(problems) > 0 {
		return fail("app_schema", strings.Join(problems, "; "),
			"adapt the app schema (docs/schema.md lists what edgesync needs) or EDGESYNC_TABLES; for a new install `edgesync migrate --app-schema` creates the reference schema")
	}
	return pass("app_schema", "%d memory tables, galleries and gallery_items as edgesync needs them", len(cfg.Tables))
}

var plainIdent = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// ident quotes a SQL identifier only where it needs it, so the SQL doctor
// prints reads like what a person would type.
func ident(s string) string {
	if plainIdent.MatchString(s) {
		return s
	}
	return pgx.Identifier{s}.Sanitize()
}

func qualified(t string) string {
	parts := strings.Split(t, ".")
	for i, p := range parts {
		parts[i] = ident(p)
	}
	return strings.Join(parts, ".")
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

func checkMigrations(ctx context.Context, url string) Result {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return fail("migrations", oneLine(err), "")
	}
	defer db.Close()
	ms, err := migrations.Status(ctx, db, false)
	if err != nil {
		return fail("migrations", "cannot read them: "+oneLine(err), "run `edgesync migrate` as a role that owns the edgesync objects")
	}
	var pending []string
	for _, m := range ms {
		if !m.Applied {
			pending = append(pending, m.Name)
		}
	}
	if len(pending) > 0 {
		return fail("migrations", fmt.Sprintf("%d of %d pending (%s)", len(pending), len(ms), strings.Join(pending, ", ")), "run `edgesync migrate` (in Kubernetes: the migrate Job, see deploy.md)")
	}
	return pass("migrations", "all %d applied", len(ms))
}

// checkDirectConnection detects a connection pooler in front of Postgres:
// logical replication needs a direct session. PgBouncer refuses the
// replication startup parameter, and in transaction mode two statements of
// one client connection may run in different server sessions.
func checkDirectConnection(ctx context.Context, db *pgx.Conn, url string) Result {
	const name = "direct_connection"
	const fix = "point EDGESYNC_DATABASE_URL at PostgreSQL itself, not at PgBouncer or another pooler (Neon: the host without -pooler)"
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rc, err := cdc.ConnectReplication(rctx, url)
	if err != nil {
		return fail(name, "a replication connection is refused: "+oneLine(err), fix)
	}
	sys, err := pglogrepl.IdentifySystem(rctx, rc)
	rc.Close(context.Background())
	if err != nil {
		return fail(name, "IDENTIFY_SYSTEM failed on a replication connection: "+oneLine(err), fix)
	}
	var pid1, pid2 int
	var probe string
	if err := db.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid1); err != nil {
		return fail(name, oneLine(err), fix)
	}
	if _, err := db.Exec(ctx, "SET application_name = 'edgesync-doctor'"); err != nil {
		return fail(name, oneLine(err), fix)
	}
	if err := db.QueryRow(ctx, "SELECT pg_backend_pid(), current_setting('application_name')").Scan(&pid2, &probe); err != nil {
		return fail(name, oneLine(err), fix)
	}
	if pid1 != pid2 || probe != "edgesync-doctor" {
		return fail(name, "session state does not persist between statements (a pooler in transaction mode)", fix)
	}
	return pass(name, "direct session (replication works, system %s, timeline %d)", sys.SystemID, sys.Timeline)
}
