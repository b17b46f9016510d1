package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

func TestNew_LogicalAndMigrated(t *testing.T) {
	url := New(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var level string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil || level != "logical" {
		t.Fatalf("wal_level = %q, %v", level, err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM storage_edges").Scan(&n); err != nil || n != 0 {
		t.Fatalf("storage_edges: %d, %v", n, err)
	}
	// Each test gets its own database.
	other := New(t)
	if other == url {
		t.Fatal("two tests share a database")
	}
}

func TestCluster_Restart(t *testing.T) {
	c := StartCluster(t)
	url := c.NewDB(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO notes (owner_id, title) VALUES (gen_random_uuid(), 'x')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := c.Restart(true); err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM notes").Scan(&n); err != nil || n != 1 {
		t.Fatalf("after crash restart notes = %d, %v", n, err)
	}
}
