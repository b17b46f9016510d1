package benchdata

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgesync/edgesync/internal/pgtest"
)

// Configure runs setup (ALTER SYSTEM statements: preloaded libraries,
// auto_explain) on a benchmark's own cluster and restarts it so they apply.
func Configure(b *testing.B, cluster *pgtest.Cluster, setup []string) {
	b.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, cluster.URL("postgres"))
	if err != nil {
		b.Fatal(err)
	}
	for _, q := range setup {
		if _, err := admin.Exec(ctx, q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	admin.Close(ctx)
	if err := cluster.Restart(false); err != nil {
		b.Fatal(err)
	}
}

// TopStatements lists the n statements with the most execution time since
// the last pg_stat_statements_reset (the extension must be preloaded), as
// aligned lines: calls, total ms, ms per call, rows and the query's start.
// thisDatabase keeps only the pool's database.
func TopStatements(ctx context.Context, pool *pgxpool.Pool, n, width int, thisDatabase bool) (string, error) {
	where := ""
	if thisDatabase {
		where = "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
	}
	rows, err := pool.Query(ctx, `SELECT calls, total_exec_time, rows, regexp_replace(left(query, $1), '\s+', ' ', 'g')
		FROM pg_stat_statements `+where+` ORDER BY total_exec_time DESC LIMIT $2`, width, n)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var out strings.Builder
	fmt.Fprintf(&out, "    %8s %10s %10s %9s  %s\n", "calls", "total ms", "ms/call", "rows", "query")
	for rows.Next() {
		var calls, rowCount int64
		var total float64
		var q string
		if err := rows.Scan(&calls, &total, &rowCount, &q); err != nil {
			return "", err
		}
		fmt.Fprintf(&out, "    %8d %10.0f %10.2f %9d  %s\n", calls, total, total/float64(max(calls, 1)), rowCount, q)
	}
	return out.String(), rows.Err()
}
