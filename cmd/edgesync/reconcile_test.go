package main

import (
	"bytes"
	"context"
	"encoding/json"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/edgesync/edgesync/internal/pgtest"
)

// runCLI runs one command line in-process and returns the exit code and
// both outputs.
func runCLI(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, &out, &errb)
	return code, out.String(), errb.String()
}

func dbExec(t *testing.T, url, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// seedCLIDamage: 3 images (6 missing edges), one orphan edge, one drifted
// blob edge.
const seedCLIDamage = `
INSERT INTO images (owner_id, url, size_bytes) SELECT gen_random_uuid(), 'https://blob/' || g, g FROM generate_series(1, 3) g;
INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present) VALUES (gen_random_uuid(), 'video', 'metadata', 'neon-db', true);
WITH m AS (INSERT INTO audio (owner_id, url, size_bytes) VALUES (gen_random_uuid(), 'https://blob/a', 1) RETURNING id)
INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, location, size_bytes)
SELECT id, 'audio'::memory_type_t, 'metadata'::artifact_t, 'neon-db'::backend_t, true, NULL, NULL FROM m
UNION ALL SELECT id, 'audio', 'asset', 'vercel-blob', true, 'https://blob/OLD', 1 FROM m;
`

func TestReconcileCmd(t *testing.T) {
	url := pgtest.New(t)
	env := map[string]string{"EDGESYNC_DATABASE_URL": url}
	dbExec(t, url, seedCLIDamage)

	code, out, errOut := runCLI(t, env, "reconcile", "--dry-run", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var got struct {
		RunID   string                     `json:"run_id"`
		State   string                     `json:"state"`
		Trigger string                     `json:"trigger"`
		DryRun  bool                       `json:"dry_run"`
		Report  map[string]json.RawMessage `json:"report"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got.RunID == "" || got.State != "done" || got.Trigger != "cli" || !got.DryRun {
		t.Errorf("run = %+v", got)
	}
	for k, want := range map[string]string{"orphans": "1", "missing": "6", "drift": "1", "stuck": "0", "failed_retried": "0", "icp_drift": "0", "fixed": "0"} {
		if string(got.Report[k]) != want {
			t.Errorf("report.%s = %s, want %s", k, got.Report[k], want)
		}
	}
	if _, ok := got.Report["duration_ms"]; !ok {
		t.Error("report has no duration_ms")
	}

	code, out, errOut = runCLI(t, env, "reconcile")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"done", "orphans", "missing         6", "fixed: 8 rows"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if errOut != "" {
		t.Errorf("stderr without a terminal: %q", errOut)
	}

	code, out, _ = runCLI(t, env, "reconcile")
	if code != 0 || !strings.Contains(out, "nothing to do") {
		t.Errorf("second run: exit %d\n%s", code, out)
	}
}

func TestReconcileCmd_Errors(t *testing.T) {
	url := pgtest.New(t)
	env := map[string]string{"EDGESYNC_DATABASE_URL": url}

	t.Run("already running", func(t *testing.T) {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		h := fnv.New64a()
		h.Write([]byte("edgesync/reconcile"))
		if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(h.Sum64())); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := runCLI(t, env, "reconcile", "--dry-run")
		if code != 1 || !strings.Contains(errOut, "another reconcile run is in progress") || strings.Count(errOut, "\n") != 1 {
			t.Errorf("exit %d, stderr %q", code, errOut)
		}
	})
	t.Run("unreachable database", func(t *testing.T) {
		code, _, errOut := runCLI(t, map[string]string{"EDGESYNC_DATABASE_URL": "postgres://u@127.0.0.1:1/db?connect_timeout=2"}, "reconcile")
		if code != 1 || !strings.HasPrefix(errOut, "edgesync: cannot connect to Postgres") || strings.Count(errOut, "\n") != 1 {
			t.Errorf("exit %d, stderr %q", code, errOut)
		}
	})
	t.Run("no config", func(t *testing.T) {
		code, _, errOut := runCLI(t, nil, "reconcile")
		if code != 1 || !strings.Contains(errOut, "EDGESYNC_DATABASE_URL") {
			t.Errorf("exit %d, stderr %q", code, errOut)
		}
	})
	t.Run("write-migration alone", func(t *testing.T) {
		code, _, errOut := runCLI(t, env, "reconcile", "--write-migration", "x.sql")
		if code != 1 || !strings.Contains(errOut, "--import-legacy") {
			t.Errorf("exit %d, stderr %q", code, errOut)
		}
	})
	t.Run("import without columns", func(t *testing.T) {
		code, _, errOut := runCLI(t, env, "reconcile", "--import-legacy")
		if code != 1 || !strings.Contains(errOut, "EDGESYNC_LEGACY_COLUMNS") {
			t.Errorf("exit %d, stderr %q", code, errOut)
		}
	})
}

func TestReconcileCmd_ImportLegacy(t *testing.T) {
	url := pgtest.New(t)
	env := map[string]string{"EDGESYNC_DATABASE_URL": url, "EDGESYNC_LEGACY_COLUMNS": "images.stored_on_icp"}
	dbExec(t, url, `ALTER TABLE images ADD COLUMN stored_on_icp boolean NOT NULL DEFAULT false;
		INSERT INTO images (owner_id, url, stored_on_icp) VALUES (gen_random_uuid(), 'https://blob/1', true), (gen_random_uuid(), NULL, true), (gen_random_uuid(), 'https://blob/3', false)`)

	code, out, errOut := runCLI(t, env, "reconcile", "--import-legacy", "--dry-run", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep struct {
		DryRun    bool  `json:"dry_run"`
		Created   int64 `json:"created"`
		Matched   int64 `json:"matched"`
		Migration string
		Tables    []struct {
			Table   string `json:"table"`
			Flagged int64  `json:"flagged"`
		} `json:"tables"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !rep.DryRun || rep.Created != 3 || rep.Matched != 0 || len(rep.Tables) != 1 || rep.Tables[0].Flagged != 2 {
		t.Errorf("dry import = %+v", rep)
	}

	file := filepath.Join(t.TempDir(), "00042_drop_legacy.sql")
	code, out, errOut = runCLI(t, env, "reconcile", "--import-legacy", "--write-migration", file)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "images") || !strings.Contains(out, file) {
		t.Errorf("output:\n%s", out)
	}
	mig, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mig), `ALTER TABLE "public"."images" DROP COLUMN "stored_on_icp";`) {
		t.Errorf("migration:\n%s", mig)
	}

	code, out, _ = runCLI(t, env, "reconcile", "--import-legacy")
	if code != 0 || !strings.Contains(out, "-- +goose Up") {
		t.Errorf("second import: exit %d\n%s", code, out)
	}
}
