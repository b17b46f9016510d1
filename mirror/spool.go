package mirror

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// spoolPattern names the spool files: downloaded assets larger than memBlobMax while they upload.
const spoolPattern = "edgesync-asset-*"

// PrepareSpool makes dir ready to hold spooled assets, once at start: it creates the directory,
// proves a file can be written there, and removes spool files an earlier process left behind (a
// crash or kill mid-upload). Nothing reads a leftover: an interrupted upload resumes from the
// chunks the canister holds and downloads the asset again. It returns how many files it removed;
// the error says what to fix.
func PrepareSpool(dir string) (removed int, err error) {
	fix := func(err error) error {
		return fmt.Errorf("ICP spool directory %s: %w; set EDGESYNC_DATA_DIR to a writable directory (the spool is its spool/ subdirectory) with room for the largest assets", dir, err)
	}
	if dir == "" {
		return 0, fix(errors.New("no directory"))
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return 0, fix(cause(err))
	}
	probe, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return 0, fix(cause(err))
	}
	name := probe.Name()
	_, werr := probe.Write([]byte("edgesync"))
	cerr := probe.Close()
	rerr := os.Remove(name)
	if err := errors.Join(werr, cerr, rerr); err != nil {
		return 0, fix(err)
	}
	left, err := filepath.Glob(filepath.Join(dir, spoolPattern))
	if err != nil {
		return 0, fix(err)
	}
	for _, f := range left {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return removed, fix(err)
		}
		removed++
	}
	return removed, nil
}

// cause drops the path from a *fs.PathError: the message names the directory already.
func cause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
