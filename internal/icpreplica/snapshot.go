package icpreplica

import (
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
)

// snapshot is what a state file holds: the keys, because clients fetched the root key once and
// must keep verifying after the double restarts, and the canister's memories. Call outcomes are
// not kept: their envelopes expire within minutes anyway.
type snapshot struct {
	RootSecret, ForeignSecret, NodeSeed []byte
	Memories                            map[string]*memory
	Writers                             []string // raw principals of the writer list
}

// SaveFile writes the keys and canister state to path, atomically (temporary file, then rename).
func (r *Replica) SaveFile(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if err := r.writeSnapshot(tmp); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("save state to %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save state to %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

func (r *Replica) writeSnapshot(w io.Writer) error {
	k, store, _ := r.state()
	store.mu.Lock()
	defer store.mu.Unlock()
	return gob.NewEncoder(w).Encode(snapshot{
		RootSecret:    blsSecretBytes(k.root),
		ForeignSecret: blsSecretBytes(k.foreign),
		NodeSeed:      k.node.Seed(),
		Memories:      store.memories,
		Writers:       slices.Collect(maps.Keys(store.access.writers)),
	})
}

// LoadFile replaces the keys and canister state with those saved in path. A missing file is not
// an error: the replica keeps its fresh state, and SaveFile will create the file.
func (r *Replica) LoadFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load state: %w", err)
	}
	defer f.Close()
	var snap snapshot
	if err := gob.NewDecoder(f).Decode(&snap); err != nil {
		return fmt.Errorf("load state from %s: %w (delete the file to start empty)", path, err)
	}
	k, err := keysFrom(snap.RootSecret, snap.ForeignSecret, snap.NodeSeed)
	if err != nil {
		return fmt.Errorf("load state from %s: %w", path, err)
	}
	if snap.Memories == nil {
		snap.Memories = map[string]*memory{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keys = k
	acc := newAccess(r.controllers, r.writers)
	for _, w := range snap.Writers {
		acc.writers[w] = true
	}
	r.store = restoreMemoryStore(r.store.limits, acc, snap.Memories)
	r.requests = newRequestLog()
	return nil
}
