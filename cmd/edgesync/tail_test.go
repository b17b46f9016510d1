package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/internal/natstest"
	natssink "github.com/edgesync/edgesync/sinks/nats"
)

// lockedBuffer is an output a running command writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// tailRun is `edgesync tail` running in-process until stop, as until an
// interrupt (main cancels the context on SIGINT/SIGTERM).
type tailRun struct {
	out, errOut lockedBuffer
	cancel      context.CancelFunc
	code        chan int
}

func startTail(t *testing.T, env map[string]string, args ...string) *tailRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &tailRun{cancel: cancel, code: make(chan int, 1)}
	go func() {
		r.code <- run(ctx, append([]string{"tail"}, args...), func(k string) (string, bool) { v, ok := env[k]; return v, ok }, &r.out, &r.errOut)
	}()
	t.Cleanup(cancel)
	return r
}

// stop interrupts the command and returns its exit code.
func (r *tailRun) stop(t *testing.T) int {
	t.Helper()
	r.cancel()
	select {
	case code := <-r.code:
		return code
	case <-time.After(10 * time.Second):
		t.Fatal("tail did not stop within 10s of the interrupt")
		return -1
	}
}

// waitOutput polls until the output has n lines.
func (r *tailRun) waitLines(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out := strings.TrimSpace(r.out.String())
		var lines []string
		if out != "" {
			lines = strings.Split(out, "\n")
		}
		if len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("tail printed %d lines, want %d:\n%s\nstderr: %s", len(lines), n, out, r.errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTailCmd_FollowsFiltersAndStops runs `edgesync tail` against a real
// NATS server: from now on, from a sequence, from a time, filtered by memory
// and subject, as lines and as JSON; an interrupt ends it with exit 0.
func TestTailCmd_FollowsFiltersAndStops(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := natstest.Start(t)
	nc := ns.Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := natssink.EnsureStream(ctx, js, natssink.StreamConfig{Name: "EDGESYNC", SubjectPrefix: "edgesync"})
	if err != nil {
		t.Fatal(err)
	}
	sub := domain.Subjects{Prefix: "edgesync"}
	const memA, memB = "0b3c8f3e-4a5e-4f7e-9a3c-1d2e3f4a5b6c", "1b3c8f3e-4a5e-4f7e-9a3c-1d2e3f4a5b6c"
	n := 0
	change := func(subject, memID, extra string) {
		t.Helper()
		n++
		id := "edgesync/0/" + string(rune('A'+n)) + "/0"
		body := `{"id":"` + id + `","op":"created","memory_id":"` + memID + `","memory_type":"image"` + extra + `,"source":{"table":"public.images","lsn":"0/1","commit_lsn":"0/2","xid":5,"commit_time":"2026-12-03T12:00:00Z"},"before":null,"after":{"present":true,"sync_state":"idle"},"emitted_at":"2026-12-03T12:00:00Z"}`
		if err := natssink.PublishSync(ctx, js, subject, id, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	change(sub.Memory("image", "created"), memA, "")
	change(sub.Edge("vercel-blob", "created"), memA, `,"backend":"vercel-blob","artifact":"asset"`)
	env := map[string]string{"EDGESYNC_NATS_URL": ns.URL()} // no database: tail needs none

	// Default: only what comes after the start, of one memory.
	r := startTail(t, env, "--memory", strings.ToUpper(memA))
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Consumers > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tail created no consumer; stderr %s", r.errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	change(sub.Memory("image", "created"), memB, "")
	if err := nc.PublishMsg(natssink.ProgressMessage(sub.SyncProgress(), []byte(`{"memory_id":"`+memA+`","memory_type":"image","bytes_done":512,"bytes_total":2048,"at":"2026-12-03T12:00:00Z"}`), 0)); err != nil {
		t.Fatal(err)
	}
	change(sub.Edge("icp-canister", "updated"), memA, `,"backend":"icp-canister","artifact":"metadata"`)
	lines := r.waitLines(t, 2)
	if code := r.stop(t); code != 0 {
		t.Fatalf("exit %d after the interrupt, want 0; stderr %s", code, r.errOut.String())
	}
	if len(lines) != 2 || !strings.Contains(lines[0], "sync.progress memory="+memA+" type=image 512/2048 bytes (25%)") ||
		!strings.Contains(lines[1], "edge.icp-canister.updated op=created memory="+memA+" type=image edge=metadata@icp-canister present=true sync=idle id=edgesync/0/E/0") {
		t.Fatalf("lines:\n%s", strings.Join(lines, "\n"))
	}
	if strings.Contains(r.out.String(), memB) || strings.Contains(r.out.String(), "vercel-blob") {
		t.Fatalf("another memory's event, or an old event, was printed:\n%s", r.out.String())
	}

	// From the first sequence, as JSON: every event, each line its envelope.
	r = startTail(t, env, "--from-seq", "1", "--json")
	lines = r.waitLines(t, 5)
	if code := r.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %d is not JSON: %q", i, l)
		}
	}
	if len(lines) != 5 || !strings.Contains(lines[0], `"id":"edgesync/0/B/0"`) {
		t.Fatalf("json lines:\n%s", strings.Join(lines, "\n"))
	}

	// From a time, one family: the edges of the last hour.
	r = startTail(t, env, "--since", "1h", "--subject", "edgesync.edge.>")
	lines = r.waitLines(t, 2)
	if code := r.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if len(lines) != 2 || !strings.Contains(lines[0], "#2 edge.vercel-blob.created") || !strings.Contains(lines[1], "#5 edge.icp-canister.updated") {
		t.Fatalf("edge lines:\n%s", strings.Join(lines, "\n"))
	}
}

func TestTailCmd_ErrorsAreOneClearLine(t *testing.T) {
	ns := natstest.Start(t)
	env := map[string]string{"EDGESYNC_NATS_URL": ns.URL()}
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"both starts", env, []string{"--since", "1h", "--from-seq", "3"}, "--since and --from-seq both say where to start"},
		{"bad memory", env, []string{"--memory", "photo-1"}, `--memory "photo-1" is not a UUID`},
		{"bad subject", env, []string{"--subject", "memory.>"}, `is not under the subject prefix "edgesync"`},
		{"admin subject", env, []string{"--subject", "edgesync.admin.>"}, "matches nothing the stream holds"},
		{"zero seq", env, []string{"--from-seq", "0"}, "--from-seq must be 1 or more"},
		{"zero since", env, []string{"--since", "0s"}, "--since 0s must be positive"},
		{"bad duration", env, []string{"--since", "yesterday"}, `invalid argument "yesterday"`},
		{"no stream", map[string]string{"EDGESYNC_NATS_URL": ns.URL(), "EDGESYNC_STREAM": "NOPE"}, nil, "stream NOPE does not exist"},
		{"no nats", map[string]string{"EDGESYNC_NATS_URL": "nats://u:secretpw@127.0.0.1:1"}, nil, "cannot connect to NATS"},
		{"bad config", map[string]string{"EDGESYNC_SUBJECT_PREFIX": "a.b"}, nil, "EDGESYNC_SUBJECT_PREFIX"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, tc.env, append([]string{"tail"}, tc.args...)...)
			if code != 1 {
				t.Fatalf("exit %d, want 1 (stderr %q)", code, errOut)
			}
			if lines := strings.Split(strings.TrimSpace(errOut), "\n"); len(lines) != 1 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("stderr %q, want one line containing %q", errOut, tc.want)
			}
			if strings.Contains(errOut, "secretpw") {
				t.Fatalf("stderr leaks the password: %q", errOut)
			}
		})
	}
}

// TestTailCmd_WithReadOnlyUser: the permissions docs/consumers.md lists
// for a consumer are enough for tail.
func TestTailCmd_WithReadOnlyUser(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := natstest.StartUsers(t,
		&server.User{Username: "admin", Password: "adminpw123"},
		&server.User{Username: "reader", Password: "readerpw123", Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{"$JS.API.CONSUMER.*.EDGESYNC.>", "$JS.API.CONSUMER.MSG.NEXT.EDGESYNC.>",
				"$JS.API.STREAM.INFO.EDGESYNC", "$JS.ACK.EDGESYNC.>"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		}})
	url := strings.Replace(ns.URL(), "nats://", "nats://admin:adminpw123@", 1)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natssink.EnsureStream(ctx, js, natssink.StreamConfig{Name: "EDGESYNC", SubjectPrefix: "edgesync"}); err != nil {
		t.Fatal(err)
	}
	if err := natssink.PublishSync(ctx, js, "edgesync.memory.note.created", "edgesync/0/1/0", []byte(`{"id":"edgesync/0/1/0","op":"created","memory_id":"0b3c8f3e-4a5e-4f7e-9a3c-1d2e3f4a5b6c","memory_type":"note"}`)); err != nil {
		t.Fatal(err)
	}
	r := startTail(t, map[string]string{"EDGESYNC_NATS_URL": strings.Replace(ns.URL(), "nats://", "nats://reader:readerpw123@", 1)},
		"--from-seq", "1", "--subject", "edgesync.memory.>")
	lines := r.waitLines(t, 1)
	if code := r.stop(t); code != 0 || !strings.Contains(lines[0], "memory.note.created op=created") {
		t.Fatalf("exit %d, lines %q, stderr %s", code, lines, r.errOut.String())
	}
}
