package cdc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/edgesync/edgesync/domain"
)

// Errors a person fixes on the server.
var (
	ErrWalLevel      = errors.New("wal_level is not logical")
	ErrNoReplication = errors.New("the role lacks the REPLICATION privilege")
	ErrNoSlotsLeft   = errors.New("no free replication slot")
	ErrWrongPlugin   = errors.New("the slot uses another output plugin")
	ErrSlotLost      = errors.New("the replication slot is lost")
	ErrNoIdentity    = errors.New("a published table has no replica identity")
	ErrTableNotFound = errors.New("a configured table does not exist")
	ErrSlotOtherDB   = errors.New("the slot belongs to another database")
	ErrSlotInUse     = errors.New("the replication slot is active for another process")
)

// Querier is what the setup helpers need from a connection or pool.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// CheckServer verifies what logical replication needs and says what to change.
func CheckServer(ctx context.Context, q Querier, slot string) error {
	var level string
	if err := q.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return fmt.Errorf("read wal_level: %w", err)
	}
	if level != "logical" {
		return fmt.Errorf("%w (it is %q): set wal_level = logical in postgresql.conf and restart Postgres (on Neon: enable logical replication in the project settings)", ErrWalLevel, level)
	}
	var repl, super bool
	var role string
	if err := q.QueryRow(ctx, "SELECT rolname, rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&role, &repl, &super); err != nil {
		return fmt.Errorf("read role privileges: %w", err)
	}
	if !repl && !super {
		return fmt.Errorf("%w: run ALTER ROLE %s REPLICATION as a superuser", ErrNoReplication, pgx.Identifier{role}.Sanitize())
	}
	var maxSlots, used int
	var exists bool
	if err := q.QueryRow(ctx, `SELECT current_setting('max_replication_slots')::int,
		(SELECT count(*) FROM pg_replication_slots),
		EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, slot).Scan(&maxSlots, &used, &exists); err != nil {
		return fmt.Errorf("read replication slots: %w", err)
	}
	if !exists && used >= maxSlots {
		return fmt.Errorf("%w: all %d of max_replication_slots are in use; raise max_replication_slots (restart needed) or drop an unused slot", ErrNoSlotsLeft, maxSlots)
	}
	return nil
}

// EnsurePublication creates the publication over tables if it does not exist
// and adds any table it lacks. Table names are schema-qualified or resolved on
// the search path; each must exist and have a usable replica identity.
func EnsurePublication(ctx context.Context, q Querier, name string, tables []string) error {
	var idents []string
	for _, t := range tables {
		var schema, rel, replident string
		var hasPK bool
		// The schema comes from the catalog: an unqualified name is where the
		// search path finds it, not necessarily public.
		err := q.QueryRow(ctx, `SELECT n.nspname, c.relname, c.relreplident::text,
				EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.oid = to_regclass($1)`, t).Scan(&schema, &rel, &replident, &hasPK)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %s (check EDGESYNC_TABLES, or run `edgesync migrate --app-schema` for the reference schema)", ErrTableNotFound, t)
		}
		if err != nil {
			return fmt.Errorf("look up table %s: %w", t, err)
		}
		if replident == "n" || (replident == "d" && !hasPK) {
			return fmt.Errorf("%w: %s has no primary key; add one or run ALTER TABLE %s REPLICA IDENTITY FULL", ErrNoIdentity, t, t)
		}
		idents = append(idents, domain.QuoteIdent(schema)+"."+domain.QuoteIdent(rel))
	}
	var exists bool
	if err := q.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("look up publication: %w", err)
	}
	pub := domain.QuoteIdent(name)
	if !exists {
		_, err := q.Exec(ctx, "CREATE PUBLICATION "+pub+" FOR TABLE "+strings.Join(idents, ", "))
		if err != nil && !isCode(err, "42710") {
			return fmt.Errorf("create publication %s: %w", name, err)
		}
		return nil
	}
	for i, t := range tables {
		var in bool
		if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
			WHERE p.pubname = $1 AND pr.prrelid = to_regclass($2))`, name, t).Scan(&in); err != nil {
			return fmt.Errorf("look up publication tables: %w", err)
		}
		if !in {
			if _, err := q.Exec(ctx, "ALTER PUBLICATION "+pub+" ADD TABLE "+idents[i]); err != nil && !isCode(err, "42710") {
				return fmt.Errorf("add %s to publication %s: %w", t, name, err)
			}
		}
	}
	return nil
}

// ResolveTable returns a table's name as the catalog and pgoutput's Relation
// messages spell it ("schema.table"). An unqualified name is resolved on the
// search path, as the unqualified SQL of the migrations and the API is, so
// storage_edges and gallery_items are matched where they really are, not
// assumed to be in public.
func ResolveTable(ctx context.Context, q Querier, name string) (string, error) {
	var qualified string
	err := q.QueryRow(ctx, `SELECT n.nspname || '.' || c.relname
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = to_regclass($1)`, name).Scan(&qualified)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("%w: %s", ErrTableNotFound, name)
	}
	if err != nil {
		return "", fmt.Errorf("look up table %s: %w", name, err)
	}
	return qualified, nil
}

func isCode(err error, code string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == code
}

// SlotInfo describes a replication slot.
type SlotInfo struct {
	Exists         bool
	Plugin         string
	Database       string
	ConfirmedFlush LSN
	RestartLSN     LSN
	WalStatus      string
	Active         bool
	ActivePID      int
	LagBytes       int64
}

// ReadSlot reads the slot's row of pg_replication_slots.
func ReadSlot(ctx context.Context, q Querier, slot string) (SlotInfo, error) {
	var s SlotInfo
	var confirmed, restart *string
	var plugin, db, walStatus *string
	var pid *int32
	var lag *int64
	err := q.QueryRow(ctx, `SELECT plugin, database, confirmed_flush_lsn::text, restart_lsn::text, wal_status, active, active_pid,
			pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, slot).
		Scan(&plugin, &db, &confirmed, &restart, &walStatus, &s.Active, &pid, &lag)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("read slot %s: %w", slot, err)
	}
	s.Exists = true
	s.Plugin, s.Database, s.WalStatus = deref(plugin), deref(db), deref(walStatus)
	if confirmed != nil {
		s.ConfirmedFlush, _ = pglogrepl.ParseLSN(*confirmed)
	}
	if restart != nil {
		s.RestartLSN, _ = pglogrepl.ParseLSN(*restart)
	}
	if pid != nil {
		s.ActivePID = int(*pid)
	}
	if lag != nil {
		s.LagBytes = *lag
	}
	return s, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Check verifies that an existing slot can be resumed from.
func (s SlotInfo) Check(slot, database string) error {
	switch {
	case s.Plugin != "pgoutput":
		return fmt.Errorf("%w: slot %s uses %q; drop it (SELECT pg_drop_replication_slot('%s')) or set EDGESYNC_SLOT to another name", ErrWrongPlugin, slot, s.Plugin, slot)
	case s.Database != database:
		return fmt.Errorf("%w: slot %s is on database %q, not %q; set EDGESYNC_SLOT to another name", ErrSlotOtherDB, slot, s.Database, database)
	case s.WalStatus == "lost":
		return fmt.Errorf("%w: slot %s has wal_status lost", ErrSlotLost, slot)
	}
	return nil
}

// ConnectReplication opens a replication=database connection.
func ConnectReplication(ctx context.Context, url string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = "edgesync"
	dial := cfg.DialFunc
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &coalescingConn{Conn: c}, nil // see coalesce.go
	}
	// A slow consumer must not be cut off by an aggressive server setting.
	return pgconn.ConnectConfig(ctx, cfg)
}

// CreateSlot creates the logical slot with an exported snapshot. The snapshot
// stays valid only while conn runs no other command.
func CreateSlot(ctx context.Context, conn *pgconn.PgConn, slot string) (pglogrepl.CreateReplicationSlotResult, error) {
	res, err := pglogrepl.CreateReplicationSlot(ctx, conn, slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		return res, fmt.Errorf("create replication slot %s: %w", slot, err)
	}
	return res, nil
}

// DropSlot drops a slot (used when it is lost).
func DropSlot(ctx context.Context, q Querier, slot string) error {
	_, err := q.Exec(ctx, "SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1", slot)
	if err != nil {
		return fmt.Errorf("drop slot %s: %w", slot, err)
	}
	return nil
}

// IsSlotGone reports whether a streaming error means the slot cannot be used
// any more (dropped or invalidated) and must be re-created.
func IsSlotGone(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case "42704": // undefined_object: slot does not exist
		return strings.Contains(pe.Message, "replication slot")
	case "55000": // object_not_in_prerequisite_state: invalidated
		return strings.Contains(pe.Message, "replication slot") || strings.Contains(pe.Message, "can no longer")
	}
	return false
}
