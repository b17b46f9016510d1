// Package nodetools gives tests the pinned npm tools of tools/node (the Motoko compiler and
// interpreter, the IC JavaScript agent), installing them first with scripts/ensure-node-tools.sh.
//
// It imports only the standard library. The one invariant: a test that needs the tools fails
// with the script's one-line reason when they cannot be installed; it never skips.
package nodetools

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	once    sync.Once
	dir     string
	initErr error
)

// Dir returns the absolute path of tools/node with its packages installed, or fails tb.
func Dir(tb testing.TB) string {
	tb.Helper()
	once.Do(func() { dir, initErr = install() })
	if initErr != nil {
		tb.Fatal(initErr)
	}
	return dir
}

func install() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "ensure-node-tools.sh"))
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if line := strings.TrimSpace(stderr.String()); line != "" {
			return "", errors.New(line)
		}
		return "", err
	}
	return filepath.Join(root, "tools", "node"), nil
}

// repoRoot is the nearest directory above the working directory that holds go.mod.
func repoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", errors.New("nodetools: go.mod not found above the working directory")
		}
		d = parent
	}
}

// Node runs `node script args...` in tools/node and returns its combined output.
func Node(tb testing.TB, timeout time.Duration, script string, args ...string) (string, error) {
	tb.Helper()
	d := Dir(tb)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{script}, args...)...)
	cmd.Dir = d
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), errors.New("node " + script + ": timed out after " + timeout.String())
	}
	return string(out), err
}
