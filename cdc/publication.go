package cdc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/edgesync/edgesync/domain"
	"github.com/jackc/pgx/v5"
)

// ErrPublicationUnusable marks an existing publication that hides changes the
// daemon needs (an operation not published, a row filter, a column list
// without a mapped column). A person fixes it; retrying does not help.
var ErrPublicationUnusable = errors.New("publication unusable")

// PublishedTable is a table the publication must carry and the columns the
// daemon reads from its changes.
type PublishedTable struct {
	Name    string
	Columns []string
}

// Publication is what CheckPublication found.
type Publication struct {
	Exists bool
	// Missing are the tables the publication does not carry yet.
	Missing []string
}

// CheckPublication reads an existing publication and says what in it the
// daemon cannot work with: every table's insert, update, delete and truncate
// must be published, with no row filter and with every needed column.
// A missing publication or missing tables are not errors (EnsurePublication
// adds them where the role owns the tables); they are reported in the result.
func CheckPublication(ctx context.Context, q Querier, name string, tables []PublishedTable) (Publication, error) {
	var p Publication
	var all, ins, upd, del, trunc bool
	err := q.QueryRow(ctx, `SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = $1`, name).
		Scan(&all, &ins, &upd, &del, &trunc)
	if errors.Is(err, pgx.ErrNoRows) {
		for _, t := range tables {
			p.Missing = append(p.Missing, t.Name)
		}
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("read publication %s: %w", name, err)
	}
	p.Exists = true
	var off []string
	for op, on := range map[string]bool{"insert": ins, "update": upd, "delete": del, "truncate": trunc} {
		if !on {
			off = append(off, op)
		}
	}
	if len(off) > 0 {
		return p, fmt.Errorf("%w: publication %s does not publish %s: run ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate') as its owner",
			ErrPublicationUnusable, name, strings.Join(sortOps(off), ", "), pgx.Identifier{name}.Sanitize())
	}
	var version int
	if err := q.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return p, fmt.Errorf("read server version: %w", err)
	}
	for _, t := range tables {
		found, err := checkPublishedTable(ctx, q, name, t, version >= 150000)
		if err != nil {
			return p, err
		}
		if !found {
			p.Missing = append(p.Missing, t.Name)
		}
	}
	return p, nil
}

// checkPublishedTable looks the table up in the publication; row filters and
// column lists exist since PostgreSQL 15.
func checkPublishedTable(ctx context.Context, q Querier, pub string, t PublishedTable, pg15 bool) (bool, error) {
	query := `SELECT NULL::text[], NULL::text FROM pg_publication_tables
		WHERE pubname = $1 AND format('%I.%I', schemaname, tablename)::regclass = to_regclass($2)`
	if pg15 {
		query = `SELECT attnames::text[], rowfilter FROM pg_publication_tables
		WHERE pubname = $1 AND format('%I.%I', schemaname, tablename)::regclass = to_regclass($2)`
	}
	var cols []string
	var filter *string
	err := q.QueryRow(ctx, query, pub, t.Name).Scan(&cols, &filter)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read publication %s for %s: %w", pub, t.Name, err)
	}
	fix := fmt.Sprintf("run ALTER PUBLICATION %s SET TABLE ... with %s listed plainly (no WHERE, no column list) as the tables' owner", pgx.Identifier{pub}.Sanitize(), domain.QuoteQualified(t.Name))
	if filter != nil {
		return true, fmt.Errorf("%w: publication %s has a row filter on %s (WHERE %s), which hides changes from edgesync: %s", ErrPublicationUnusable, pub, t.Name, *filter, fix)
	}
	if cols != nil {
		have := map[string]bool{}
		for _, c := range cols {
			have[c] = true
		}
		for _, c := range t.Columns {
			if !have[c] {
				return true, fmt.Errorf("%w: publication %s publishes a column list of %s without %s, which edgesync reads: %s", ErrPublicationUnusable, pub, t.Name, c, fix)
			}
		}
	}
	return true, nil
}

func sortOps(ops []string) []string {
	var out []string
	for _, o := range []string{"insert", "update", "delete", "truncate"} {
		for _, x := range ops {
			if x == o {
				out = append(out, o)
			}
		}
	}
	return out
}
