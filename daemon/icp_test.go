package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	req, err := http.NewRequest(http.MethodPost, "http://"+e.rd.d.Addr()+path, nil)
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
