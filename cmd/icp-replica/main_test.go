package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the writer and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRun_servesUntilCancelled(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	var stderr syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"--addr", "127.0.0.1:0", "--latency", "1ms", "--state-file", state}, pw, &stderr)
		_ = pw.Close()
	}()

	lines := bufio.NewScanner(pr)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "canister_id=") {
		t.Fatalf("first line %q; want canister_id=<principal> (stderr: %s)", lines.Text(), stderr.String())
	}
	if got := strings.TrimPrefix(lines.Text(), "canister_id="); got != "bkyz2-fmaaa-aaaaa-qaaaq-cai" {
		t.Fatalf("canister id %q", got)
	}
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "url=") {
		t.Fatalf("second line %q; want url=", lines.Text())
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	resp, err := http.Get(strings.TrimPrefix(lines.Text(), "url=") + "/api/v2/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status: HTTP %d", resp.StatusCode)
	}

	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit %d; stderr: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after the context ended")
	}
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("state file not written: %v", err)
	}
}

func TestRun_badFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--fail-rate", "2"},
		{"--fail-rate", "NaN"},
		{"--latency", "soon"},
		{"--nope"},
		{"--canister-id", "not-a-principal"},
		{"--controller", "not-a-principal"},
		{"extra"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var stdout, stderr syncBuffer
			code := run(context.Background(), args, &stdout, &stderr)
			if code != 2 {
				t.Fatalf("exit %d; want 2", code)
			}
			msg := stderr.String()
			if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "icp-replica: ") {
				t.Fatalf("stderr %q; want one line", msg)
			}
			if stdout.String() != "" {
				t.Fatalf("stdout %q; want nothing", stdout.String())
			}
		})
	}
}

func TestRun_addressInUse(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	go func() { run(ctx, []string{"--addr", "127.0.0.1:0"}, pw, io.Discard); _ = pw.Close() }()
	lines := bufio.NewScanner(pr)
	lines.Scan()
	lines.Scan()
	addr := strings.TrimPrefix(lines.Text(), "url=http://")
	go func() { _, _ = io.Copy(io.Discard, pr) }()

	var stderr syncBuffer
	if code := run(context.Background(), []string{"--addr", addr}, io.Discard, &stderr); code != 1 {
		t.Fatalf("exit %d; want 1 (stderr %q)", code, stderr.String())
	}
}
