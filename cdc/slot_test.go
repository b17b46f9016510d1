package cdc_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// appSchemaConn connects to a fresh database (reference schema in public)
// with memory tables also in schema app, and the search path app, public.
func appSchemaConn(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	for _, q := range []string{
		`CREATE SCHEMA app`,
		`CREATE TABLE app.images (id uuid PRIMARY KEY, url text)`,
		`CREATE TABLE app.widgets (id uuid PRIMARY KEY)`,
		`SET search_path = app, public`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return conn
}

func TestResolveTable(t *testing.T) {
	ctx := context.Background()
	conn := appSchemaConn(t)
	for name, want := range map[string]string{
		"app.images":    "app.images",
		"public.images": "public.images",
		"images":        "app.images", // the search path decides, not a default of public
		"widgets":       "app.widgets",
		"storage_edges": "public.storage_edges",
	} {
		got, err := cdc.ResolveTable(ctx, conn, name)
		if err != nil || got != want {
			t.Errorf("ResolveTable(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	if _, err := cdc.ResolveTable(ctx, conn, "nope.images"); !errors.Is(err, cdc.ErrTableNotFound) {
		t.Errorf("ResolveTable of a missing table: %v, want ErrTableNotFound", err)
	}
}

func TestEnsurePublication_OtherSchema(t *testing.T) {
	ctx := context.Background()
	conn := appSchemaConn(t)
	list := func() []string {
		t.Helper()
		rows, err := conn.Query(ctx, `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = 'edgesync' ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	if err := cdc.EnsurePublication(ctx, conn, "edgesync", []string{"app.images", "gallery_items", "storage_edges"}); err != nil {
		t.Fatal(err)
	}
	if got, want := list(), []string{"app.images", "public.gallery_items", "public.storage_edges"}; !slices.Equal(got, want) {
		t.Errorf("publication tables %v, want %v", got, want)
	}
	// Adding to an existing publication: the unqualified name is the one
	// the search path finds (app.widgets), quoted with its real schema.
	if err := cdc.EnsurePublication(ctx, conn, "edgesync", []string{"app.images", "widgets", "gallery_items", "storage_edges"}); err != nil {
		t.Fatal(err)
	}
	if got, want := list(), []string{"app.images", "app.widgets", "public.gallery_items", "public.storage_edges"}; !slices.Equal(got, want) {
		t.Errorf("publication tables %v, want %v", got, want)
	}
}
