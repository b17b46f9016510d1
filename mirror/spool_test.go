package mirror_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
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

// chunkyReader returns its data in pieces of varying size, as a socket does, then err.
type chunkyReader struct {
	data []byte
	next int
	err  error
}

func (r *chunkyReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	r.next = r.next*7%(300<<10) + 1 // 1 B … 300 KiB
	n := copy(p[:min(len(p), r.next)], r.data)
	r.data = r.data[n:]
	return n, nil
}

type failingWriter struct{ after int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after -= len(p); w.after < 0 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

// TestSpool: the copy and the hash (made on another goroutine, from recycled buffers) are
// exactly those of the input, in order, and a read or a write error ends it with that error.
func TestSpool(t *testing.T) {
	data := make([]byte, 5<<20+12345)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	for range 2 { // the second run reuses the pooled buffers
		var out bytes.Buffer
		h := sha256.New()
		n, err := mirror.Spool(&out, &chunkyReader{data: data, err: io.EOF}, h)
		if err != nil || n != int64(len(data)) || !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("spool = %d, %v; copied %d bytes, equal %t; want all %d", n, err, out.Len(), bytes.Equal(out.Bytes(), data), len(data))
		}
		if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
			t.Fatalf("hash %x; want %x", got, want)
		}
	}
	reset := errors.New("connection reset")
	if _, err := mirror.Spool(io.Discard, &chunkyReader{data: data[:3<<20], err: reset}, sha256.New()); !errors.Is(err, reset) {
		t.Errorf("spool from a failing reader: %v; want %v", err, reset)
	}
	if _, err := mirror.Spool(&failingWriter{after: 2 << 20}, &chunkyReader{data: data, err: io.EOF}, sha256.New()); err == nil || err.Error() != "disk full" {
		t.Errorf("spool to a failing writer: %v; want disk full", err)
	}
}
