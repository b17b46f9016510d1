package mirror_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgesync/edgesync/mirror"
)

func TestPrepareSpool(t *testing.T) {
	t.Run("creates a missing directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data", "spool")
		n, err := mirror.PrepareSpool(dir)
		if err != nil || n != 0 {
			t.Fatalf("PrepareSpool = %d, %v", n, err)
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			t.Fatalf("spool dir: %v", err)
		}
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Errorf("the write check left %d files", len(left))
		}
	})
	t.Run("removes leftover spool files only", func(t *testing.T) {
		dir := t.TempDir()
		for _, f := range []string{"edgesync-asset-1234", "edgesync-asset-99", "keep.txt"} {
			if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		n, err := mirror.PrepareSpool(dir)
		if err != nil || n != 2 {
			t.Fatalf("PrepareSpool = %d, %v; want 2 removed", n, err)
		}
		left, _ := os.ReadDir(dir)
		if len(left) != 1 || left[0].Name() != "keep.txt" {
			t.Errorf("left %v; want only keep.txt", left)
		}
	})
	t.Run("unusable directory: one line naming EDGESYNC_DATA_DIR", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "a-file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, dir := range []string{filepath.Join(file, "spool"), ""} {
			_, err := mirror.PrepareSpool(dir)
			if err == nil || !strings.Contains(err.Error(), "set EDGESYNC_DATA_DIR to a writable directory") || strings.Contains(err.Error(), "\n") {
				t.Errorf("PrepareSpool(%q) = %v; want one line naming EDGESYNC_DATA_DIR", dir, err)
			}
		}
	})
}
