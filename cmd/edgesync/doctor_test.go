package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/internal/natstest"
	"github.com/edgesync/edgesync/internal/pgtest"
)

func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestDoctorCmd: one line per check and a summary, exit 1 when a check
// fails, the same results as JSON, and no secret in either.
func TestDoctorCmd(t *testing.T) {
	env := map[string]string{
		"EDGESYNC_DATABASE_URL": pgtest.NewEmpty(t), // no migrations: fails
		"EDGESYNC_NATS_URL":     "nats://u:natsSecret99@" + closedAddr(t),
		"EDGESYNC_DATA_DIR":     t.TempDir(),
		"EDGESYNC_ADMIN_TOKEN":  "dG9rZW4tc2VjcmV0LXZhbHVl=",
	}
	code, out, errOut := runCLI(t, env, "doctor")
	if code != 1 || errOut != "" {
		t.Fatalf("exit %d, stderr %q, want 1 and nothing on stderr", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 15 || !strings.HasPrefix(lines[0], "PASS  database") || !strings.Contains(out, "FAIL  migrations") ||
		!strings.Contains(out, "FAIL  nats") || !strings.Contains(lines[14], "fail") {
		t.Fatalf("output:\n%s", out)
	}
	code, out, _ = runCLI(t, env, "doctor", "--json")
	var r struct {
		OK     bool `json:"ok"`
		Checks []struct {
			Check, Status, Detail, Fix string
		} `json:"checks"`
	}
	if code != 1 || json.Unmarshal([]byte(out), &r) != nil || r.OK || len(r.Checks) != 14 {
		t.Fatalf("exit %d, %s", code, out)
	}
	for _, s := range []string{"natsSecret99", "dG9rZW4tc2Vjcm"} {
		if strings.Contains(out, s) {
			t.Fatalf("doctor --json shows a secret:\n%s", out)
		}
	}
}

// TestRunCmd_RefusesEmbeddedNATSInKubernetes: in a pod, an empty
// EDGESYNC_NATS_URL stops `run` with one line before anything starts.
func TestRunCmd_RefusesEmbeddedNATSInKubernetes(t *testing.T) {
	env := map[string]string{
		"EDGESYNC_DATABASE_URL":   "postgres://u:pw@" + closedAddr(t) + "/db",
		"KUBERNETES_SERVICE_HOST": "10.96.0.1",
		"EDGESYNC_DATA_DIR":       t.TempDir(),
	}
	code, _, errOut := runCLI(t, env, "run")
	if code != 1 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "EDGESYNC_NATS_URL is empty inside Kubernetes") || !strings.Contains(errOut, "EDGESYNC_NATS_EMBEDDED=true") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

// TestRunCmd_FailsOnUnusableStreamOrPublication: what only a person can fix
// ends `run` with one line instead of a retry loop.
func TestRunCmd_FailsOnUnusableStreamOrPublication(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := natstest.Start(t)
	js, err := jetstream.New(ns.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	// An operator's stream over everything of the prefix.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EDGESYNC", Subjects: []string{"edgesync.>"}, Storage: jetstream.FileStorage, Duplicates: 5 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"EDGESYNC_DATABASE_URL": pgtest.New(t),
		"EDGESYNC_NATS_URL":     ns.URL(),
		"EDGESYNC_HTTP_ADDR":    "127.0.0.1:0",
		"EDGESYNC_DATA_DIR":     t.TempDir(),
	}
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	code, _, errOut := runCLIContext(rctx, env, "run")
	if code != 1 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "captures the request-reply subject edgesync.admin.reconcile") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}

	// A publication that does not publish deletes.
	env["EDGESYNC_STREAM"], env["EDGESYNC_SUBJECT_PREFIX"] = "OTHER", "other"
	dbExec(t, env["EDGESYNC_DATABASE_URL"], `CREATE PUBLICATION edgesync FOR TABLE images, videos, notes, documents, audio, gallery_items, storage_edges WITH (publish = 'insert, update, truncate')`)
	code, _, errOut = runCLIContext(rctx, env, "run")
	if code != 1 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "does not publish delete") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

// runCLIContext is runCLI under ctx (a `run` that wrongly starts ends with it).
func runCLIContext(ctx context.Context, env map[string]string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(ctx, args, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, &out, &errb)
	return code, out.String(), errb.String()
}
