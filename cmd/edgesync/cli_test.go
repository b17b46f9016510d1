package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/internal/icpreplica"
	"github.com/edgesync/edgesync/internal/natstest"
	"github.com/edgesync/edgesync/internal/pgtest"
	natssink "github.com/edgesync/edgesync/sinks/nats"
)

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "edgesync ") || !strings.Contains(out, "go1.") {
		t.Fatalf("exit %d, %q", code, out)
	}
}

func TestMigrateCmd_UpStatusDown(t *testing.T) {
	url := pgtest.NewEmpty(t)
	env := map[string]string{"EDGESYNC_DATABASE_URL": url}
	code, out, errOut := runCLI(t, env, "migrate", "up", "--app-schema")
	if code != 0 || !strings.Contains(out, "00001_storage_edges.sql") {
		t.Fatalf("up: exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, env, "migrate", "--app-schema") // up is the default; twice is a no-op
	if code != 0 || !strings.Contains(out, "up to date") {
		t.Fatalf("second up: exit %d %q", code, out)
	}
	code, out, _ = runCLI(t, env, "migrate", "status", "--app-schema", "--json")
	var st []struct {
		Name    string `json:"name"`
		Applied bool   `json:"applied"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st) < 5 {
		t.Fatalf("status: exit %d %q", code, out)
	}
	for _, m := range st {
		if !m.Applied {
			t.Errorf("%s pending after up", m.Name)
		}
	}
	code, out, _ = runCLI(t, env, "migrate", "down", "--app-schema")
	if code != 0 || !strings.Contains(out, "down") {
		t.Fatalf("down: exit %d %q", code, out)
	}
	code, out, _ = runCLI(t, env, "migrate", "status", "--app-schema")
	if code != 0 || !strings.Contains(out, "pending") {
		t.Fatalf("status after down: exit %d %q", code, out)
	}
}

func TestCLI_ErrorsAreOneClearLine(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no url", nil, []string{"migrate"}, "EDGESYNC_DATABASE_URL: is required"},
		{"unreachable", map[string]string{"EDGESYNC_DATABASE_URL": "postgres://u:secretpw@127.0.0.1:1/db"}, []string{"migrate"}, "connection refused"},
		{"bad action", nil, []string{"migrate", "sideways"}, `invalid argument "sideways"`},
		{"bad flag", nil, []string{"status", "--bogus"}, "unknown flag: --bogus"},
		{"bad duration", map[string]string{"EDGESYNC_DATABASE_URL": "postgres://u@h/d", "EDGESYNC_RECONCILE_INTERVAL": "ten minutes"}, []string{"status"}, `"ten minutes" is not a duration (try 10m)`},
		{"unknown command", nil, []string{"frobnicate"}, "unknown command"},
		{"missing config file", nil, []string{"status", "--config", "/nonexistent/edgesync.yaml"}, "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, tc.env, tc.args...)
			if code != 1 {
				t.Fatalf("exit %d, want 1 (stderr %q)", code, errOut)
			}
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			if len(lines) != 1 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("stderr %q, want one line containing %q", errOut, tc.want)
			}
			if strings.Contains(errOut, "secretpw") || strings.Contains(errOut, "goroutine") {
				t.Fatalf("stderr leaks a secret or a stack: %q", errOut)
			}
		})
	}
}

func TestStatusCmd(t *testing.T) {
	url := pgtest.New(t)
	dbExec(t, url, `INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, sync_state)
		VALUES (gen_random_uuid(), 'image', 'metadata', 'neon-db', true, 'idle'),
		       (gen_random_uuid(), 'image', 'asset', 'icp-canister', false, 'migrating')`)
	env := map[string]string{"EDGESYNC_DATABASE_URL": url, "EDGESYNC_ADMIN_TOKEN": "tok-secret"}
	code, out, errOut := runCLI(t, env, "status", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var r statusReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Slot.Exists || r.Sync["migrating"] != 1 || r.Sync["idle"] != 1 || len(r.Edges) != 2 {
		t.Fatalf("status %+v", r)
	}
	if strings.Contains(out, "tok-secret") {
		t.Fatal("status prints the admin token")
	}
	code, out, _ = runCLI(t, env, "status")
	if code != 0 || !strings.Contains(out, "does not exist yet") || !strings.Contains(out, "migrating 1") {
		t.Fatalf("exit %d %q", code, out)
	}
}

// TestReconcileCmd_ChecksICPAndPublishes: from the CLI, a run compares edges
// with the canister when the ICP mirror is configured, and publishes its
// report on <prefix>.reconcile.completed when NATS is configured.
func TestReconcileCmd_ChecksICPAndPublishes(t *testing.T) {
	ctx := context.Background()
	url := pgtest.New(t)
	replica := icpreplica.StartTest(t, icpreplica.Config{})
	ns := natstest.Start(t)
	js, err := jetstream.New(ns.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natssink.EnsureStream(ctx, js, natssink.StreamConfig{Name: "EDGESYNC", SubjectPrefix: "edgesync"}); err != nil {
		t.Fatal(err)
	}
	// An image whose edges say it is on ICP; the canister has never seen it.
	dbExec(t, url, `INSERT INTO images (id, owner_id, url) VALUES ('00000000-0000-4000-8000-0000000000aa', gen_random_uuid(), 'https://blob/x');
		INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present) VALUES
		('00000000-0000-4000-8000-0000000000aa', 'image', 'metadata', 'neon-db', true),
		('00000000-0000-4000-8000-0000000000aa', 'image', 'asset', 'vercel-blob', true),
		('00000000-0000-4000-8000-0000000000aa', 'image', 'metadata', 'icp-canister', true)`)
	env := map[string]string{
		"EDGESYNC_DATABASE_URL":       url,
		"EDGESYNC_NATS_URL":           ns.URL(),
		"EDGESYNC_ICP_URL":            replica.URL(),
		"EDGESYNC_ICP_CANISTER_ID":    replica.CanisterID().String(),
		"EDGESYNC_ICP_FETCH_ROOT_KEY": "true",
	}
	code, out, errOut := runCLI(t, env, "reconcile", "--dry-run", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var run struct {
		Report struct {
			ICPDrift int `json:"icp_drift"`
		} `json:"report"`
	}
	if err := json.Unmarshal([]byte(out), &run); err != nil {
		t.Fatal(err)
	}
	if run.Report.ICPDrift != 1 {
		t.Fatalf("icp_drift = %d, want 1: %s", run.Report.ICPDrift, out)
	}
	st, err := js.Stream(ctx, "EDGESYNC")
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, "edgesync.reconcile.completed")
	if err != nil {
		t.Fatalf("no reconcile.completed event: %v", err)
	}
	if !strings.Contains(string(m.Data), `"trigger":"cli"`) {
		t.Fatalf("completed event %s", m.Data)
	}
}
