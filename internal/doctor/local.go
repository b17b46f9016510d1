package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"go.uber.org/zap"

	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/icp"
)

// checkDataDir: the data directory (or, before the first start, the
// directory it will be created in) is writable and has room for the largest
// asset the mirror handles.
func checkDataDir(cfg config.Config) Result {
	const name = "data_dir"
	dir := cfg.DataDir
	probeDir := dir
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		probeDir = filepath.Dir(filepath.Clean(dir))
	}
	f, err := os.CreateTemp(probeDir, ".edgesync-doctor-*")
	if err != nil {
		return fail(name, fmt.Sprintf("%s is not writable: %s", dir, oneLine(unwrapPath(err))),
			"set EDGESYNC_DATA_DIR to a writable directory (in Kubernetes: an emptyDir volume, as deploy/k8s mounts on /tmp)")
	}
	f.Close()
	os.Remove(f.Name())
	var st syscall.Statfs_t
	if err := syscall.Statfs(probeDir, &st); err != nil {
		return fail(name, oneLine(err), "")
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < cfg.AssetMaxBytes {
		return fail(name, fmt.Sprintf("%s has %s free, less than EDGESYNC_ASSET_MAX_BYTES (%s)", dir, bytesText(free), bytesText(cfg.AssetMaxBytes)),
			"give the volume more room (emptyDir sizeLimit) or lower EDGESYNC_ASSET_MAX_BYTES")
	}
	return pass(name, "%s writable, %s free (assets up to %s)", dir, bytesText(free), bytesText(cfg.AssetMaxBytes))
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// checkICP: the replica answers its status endpoint, the canister id is a
// principal and the identity file is a readable PEM key.
func checkICP(ctx context.Context, cfg config.Config) Result {
	const name = "icp"
	if cfg.ICPURL == "" {
		return skip(name, "EDGESYNC_ICP_URL is empty: the ICP mirror is off")
	}
	if _, err := principal.Decode(cfg.ICPCanisterID); err != nil {
		return fail(name, fmt.Sprintf("EDGESYNC_ICP_CANISTER_ID %q is not a principal: %s", cfg.ICPCanisterID, oneLine(err)), "set it to the memory-store canister's id (dfx canister id memory_store)")
	}
	if cfg.ICPIdentityFile != "" {
		pem, err := os.ReadFile(cfg.ICPIdentityFile)
		if err != nil {
			return fail(name, "identity file: "+oneLine(unwrapPath(err)), "mount the PEM key at EDGESYNC_ICP_IDENTITY_FILE (the Secret key icp-identity.pem) or leave it empty for anonymous")
		}
		if !strings.Contains(string(pem), "PRIVATE KEY") {
			return fail(name, "identity file holds no PEM private key", "export it with dfx identity export NAME")
		}
	}
	url := strings.TrimRight(cfg.ICPURL, "/") + "/api/v2/status"
	if err := get(ctx, url, true); err != nil {
		return fail(name, err.Error(), "check EDGESYNC_ICP_URL and the NetworkPolicy egress to it")
	}
	// A verified query of a key nobody stores: the canister exists, speaks
	// the memory-store interface, and its answer's certificate verifies.
	client, err := icp.New(icp.Config{URL: cfg.ICPURL, CanisterID: cfg.ICPCanisterID, IdentityFile: cfg.ICPIdentityFile,
		FetchRootKey: cfg.ICPFetchRootKey, CallTimeout: 10 * time.Second}, zap.NewNop())
	if err != nil {
		return fail(name, "cannot build the ICP client: "+oneLine(err), "check EDGESYNC_ICP_IDENTITY_FILE and EDGESYNC_ICP_FETCH_ROOT_KEY (true only for a local replica)")
	}
	if _, err := client.Status(ctx, probeUUID); err != nil {
		return fail(name, fmt.Sprintf("canister %s does not answer a status query: %s", cfg.ICPCanisterID, oneLine(err)),
			"check EDGESYNC_ICP_CANISTER_ID (the memory-store canister) and EDGESYNC_ICP_FETCH_ROOT_KEY (false on mainnet, true for a local replica)")
	}
	return pass(name, "%s answers; canister %s answers queries as %s (whether that principal may write is not checked)", cfg.ICPURL, cfg.ICPCanisterID, client.Sender())
}

// probeUUID is a key no memory has, for a harmless status query.
const probeUUID = "00000000-0000-4000-8000-000000000000"

// checkBlob: any HTTP answer from the blob host counts.
func checkBlob(ctx context.Context, cfg config.Config) Result {
	const name = "blob"
	if cfg.BlobURL == "" {
		return warn(name, "EDGESYNC_BLOB_URL is empty: the blob host's health check and its alert never run", "set EDGESYNC_BLOB_URL to your blob store's base URL (https://<store>.public.blob.vercel-storage.com)")
	}
	if err := get(ctx, cfg.BlobURL, false); err != nil {
		return fail(name, err.Error(), "check EDGESYNC_BLOB_URL and the NetworkPolicy egress to it")
	}
	return pass(name, "%s answers", cfg.BlobURL)
}

func get(ctx context.Context, url string, want2xx bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("%s: %s", url, oneLine(err))
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) {
			err = ue.Unwrap()
		}
		return fmt.Errorf("%s is unreachable: %s", url, oneLine(err))
	}
	resp.Body.Close()
	if want2xx && resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return nil
}
