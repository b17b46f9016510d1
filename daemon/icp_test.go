package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap/zaptest"

	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/icp"
	"github.com/edgesync/edgesync/internal/icpreplica"
	"github.com/edgesync/edgesync/internal/natstest"
	"github.com/edgesync/edgesync/internal/pgtest"
)

// icpEnv is a daemon with the ICP mirror on, in the deployed shape: an external NATS server, the
// replica double, and a blob host on loopback that the allow-list names explicitly.
type icpEnv struct {
	cfg     config.Config
	pool    *pgxpool.Pool
	replica *icpreplica.Replica
	blobs   *testBlobs
	rd      *runningDaemon
}

// testBlobs serves files by path; a path without a file answers 404.
type testBlobs struct {
	*httptest.Server
	mu    sync.Mutex
	files map[string][]byte
}

func (b *testBlobs) put(name string, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.files["/"+name] = data
}

func newICPEnv(t *testing.T, edit func(*config.Config)) *icpEnv {
	t.Helper()
	dbURL := pgtest.New(t)
	e := &icpEnv{pool: pgtest.Pool(t, dbURL), replica: icpreplica.StartTest(t, icpreplica.Config{})}
	e.blobs = &testBlobs{files: map[string][]byte{}}
	e.blobs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.blobs.mu.Lock()
		data, ok := e.blobs.files[r.URL.Path]
		e.blobs.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		_, _ = w.Write(data)
	}))
	t.Cleanup(e.blobs.Close)
	ns := natstest.Start(t)
	e.cfg = testConfig(t, dbURL, ns.URL())
	e.cfg.ICPURL, e.cfg.ICPCanisterID, e.cfg.ICPFetchRootKey = e.replica.URL(), e.replica.CanisterID().String(), true
	e.cfg.AssetHosts = e.blobs.Listener.Addr().String()
	if edit != nil {
		edit(&e.cfg)
	}
	if err := e.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e.rd = startDaemon(t, e.cfg)
	waitSlot(t, e.pool, e.cfg.Slot)
	return e
}

// image inserts an image whose asset URL is the blob host's name and returns its id.
func (e *icpEnv) image(t *testing.T, name string, size int) string {
	t.Helper()
	var id string
	if err := e.pool.QueryRow(context.Background(), `INSERT INTO images (owner_id, title, url, size_bytes)
		VALUES (gen_random_uuid(), $1, $2, $3) RETURNING id::text`, name, e.blobs.URL+"/"+name, size).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// post sends an admin request and returns the status and body.
func (e *icpEnv) post(t *testing.T, path string) (int, string) {
	t.Helper()
	return e.request(t, http.MethodPost, path)
}

func (e *icpEnv) request(t *testing.T, method, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+e.rd.d.Addr()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.cfg.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// storeForever asks for the memory's ICP mirror, as the app does.
func (e *icpEnv) storeForever(t *testing.T, id string) {
	t.Helper()
	if code, body := e.post(t, "/api/memories/image/"+id+"/store-forever"); code != http.StatusAccepted {
		t.Fatalf("store forever: %d %s", code, body)
	}
}

// icpAsset reads the memory's icp-canister asset edge.
func (e *icpEnv) icpAsset(t *testing.T, id string) (present bool, state, syncError, hash string) {
	t.Helper()
	var se, h *string
	if err := e.pool.QueryRow(context.Background(), `SELECT present, sync_state::text, sync_error, content_hash FROM storage_edges
		WHERE memory_id = $1 AND backend = 'icp-canister' AND artifact = 'asset'`, id).Scan(&present, &state, &se, &h); err != nil {
		return false, "absent (" + err.Error() + ")", "", ""
	}
	if se != nil {
		syncError = *se
	}
	if h != nil {
		hash = *h
	}
	return present, state, syncError, hash
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestICP_spoolWithExternalNATS: with an external NATS (nothing creates EDGESYNC_DATA_DIR for an
// embedded server) and a data dir that does not exist yet, an asset larger than the 4 MiB kept in
// memory is spooled, uploaded in chunks and verified by the double; the spool is empty afterwards.
func TestICP_spoolWithExternalNATS(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "not", "there", "yet")
	e := newICPEnv(t, func(c *config.Config) { c.DataDir = dataDir })
	data := make([]byte, 5<<20+12345)
	for i := range data {
		data[i] = byte(i * 7)
	}
	e.blobs.put("big.mov", data)
	id := e.image(t, "big.mov", len(data))
	eventually(t, 20*time.Second, "the web2 edges", func() (bool, string) {
		var n int
		_ = e.pool.QueryRow(context.Background(), `SELECT count(*) FROM storage_edges WHERE memory_id = $1`, id).Scan(&n)
		return n == 2, fmt.Sprintf("%d edges", n)
	})
	e.storeForever(t, id)
	eventually(t, 90*time.Second, "the asset on ICP", func() (bool, string) {
		present, state, se, hash := e.icpAsset(t, id)
		return present && state == "idle" && hash == sha256Hex(data), fmt.Sprintf("present=%v state=%s error=%q hash=%s", present, state, se, hash)
	})
	if n := e.replica.Stats().Calls[icp.MethodPutChunk]; n < 3 {
		t.Errorf("%d chunks reached the double; a %d-byte asset needs at least 3", n, len(data))
	}
	left, err := os.ReadDir(filepath.Join(dataDir, "spool"))
	if err != nil || len(left) != 0 {
		t.Errorf("spool after the upload: %v, %v; want an empty directory", left, err)
	}
}

// TestICP_unwritableDataDir: a data dir the daemon cannot use fails the start with one line
// naming EDGESYNC_DATA_DIR, before anything runs.
func TestICP_unwritableDataDir(t *testing.T) {
	dbURL := pgtest.New(t)
	cfg := testConfig(t, dbURL, natstest.Start(t).URL())
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = file
	cfg.ICPURL, cfg.ICPCanisterID = "http://127.0.0.1:1", "aaaaa-aa"
	d, err := New(context.Background(), cfg, zaptest.NewLogger(t))
	if err == nil {
		d.close()
		t.Fatal("New accepted a data dir that is a file")
	}
	if msg := err.Error(); !strings.Contains(msg, "set EDGESYNC_DATA_DIR to a writable directory") || strings.Contains(msg, "\n") {
		t.Errorf("error %q; want one line naming EDGESYNC_DATA_DIR", msg)
	}
}

// TestICP_failedSyncHeals: one attempt per round, an asset URL that answers 404: the edge ends
// failed with a sync_error that says when edgesync tries again. Once the file exists and the
// retry time has come, a reconcile run re-queues the memory and the edge ends present, without a
// second Store Forever request.
func TestICP_failedSyncHeals(t *testing.T) {
	e := newICPEnv(t, func(c *config.Config) { c.ICPMaxAttempts, c.ICPRetryBase = 1, time.Second })
	ctx := context.Background()
	id := e.image(t, "late.jpg", 2048)
	eventually(t, 20*time.Second, "the web2 edges", func() (bool, string) {
		var n int
		_ = e.pool.QueryRow(ctx, `SELECT count(*) FROM storage_edges WHERE memory_id = $1`, id).Scan(&n)
		return n == 2, fmt.Sprintf("%d edges", n)
	})
	e.storeForever(t, id)
	var syncErr string
	eventually(t, 30*time.Second, "the asset edge failed", func() (bool, string) {
		_, state, se, _ := e.icpAsset(t, id)
		syncErr = se
		return state == "failed", fmt.Sprintf("state %s error %q", state, se)
	})
	if !strings.HasPrefix(syncErr, "asset URL answered 404") || !strings.Contains(syncErr, "round 1 of 10 gave up after 1 attempts; edgesync tries again after ") {
		t.Errorf("sync_error %q; want the 404 and when edgesync tries again", syncErr)
	}

	data := []byte(strings.Repeat("a late but real file ", 100))
	e.blobs.put("late.jpg", data)
	eventually(t, 10*time.Second, "the retry time", func() (bool, string) {
		var due bool
		err := e.pool.QueryRow(ctx, `SELECT coalesce(next_attempt_at <= now(), false) FROM sync_attempts WHERE memory_id = $1`, id).Scan(&due)
		return err == nil && due, fmt.Sprintf("due %v (%v)", due, err)
	})
	code, body := e.post(t, "/admin/reconcile")
	if code != http.StatusAccepted {
		t.Fatalf("POST /admin/reconcile: %d %s", code, body)
	}
	var started struct {
		RunID string `json:"run_id"`
	}
	if err := json.Unmarshal([]byte(body), &started); err != nil || started.RunID == "" {
		t.Fatalf("reconcile answer %s (%v)", body, err)
	}
	var run struct {
		State  string `json:"state"`
		Report struct {
			FailedRetried int64 `json:"failed_retried"`
		} `json:"report"`
	}
	eventually(t, 30*time.Second, "the reconcile run", func() (bool, string) {
		code, body := e.request(t, http.MethodGet, "/admin/reconcile/"+started.RunID)
		_ = json.Unmarshal([]byte(body), &run)
		return code == http.StatusOK && run.State == "done", fmt.Sprintf("%d %s", code, body)
	})
	if run.Report.FailedRetried != 1 {
		t.Errorf("failed_retried = %d; want 1 (the asset edge)", run.Report.FailedRetried)
	}
	eventually(t, 30*time.Second, "the asset on ICP", func() (bool, string) {
		present, state, se, hash := e.icpAsset(t, id)
		return present && state == "idle" && hash == sha256Hex(data), fmt.Sprintf("present=%v state=%s error=%q hash=%s", present, state, se, hash)
	})
	if n := e.replica.Stats().Calls[icp.MethodCommitAsset]; n != 1 {
		t.Errorf("%d commits; want 1", n)
	}
	var left int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM sync_attempts WHERE memory_id = $1`, id).Scan(&left); err != nil || left != 0 {
		t.Errorf("sync_attempts rows after success: %d (%v)", left, err)
	}
}
