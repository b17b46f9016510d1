package icpreplica

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/edgesync/edgesync/icp"
)

const testUUID = "123e4567-e89b-12d3-a456-426614174000"

func errOf[T any](r icp.Result[T]) error {
	if r.Err == nil {
		return nil
	}
	return r.Err.Err()
}

func TestMemoryStore_assetLifecycle(t *testing.T) {
	s := newMemoryStore(defaultLimits(1<<20), nil)
	data := []byte("0123456789") // chunk size 4: chunks "0123", "4567", "89"
	hash := sha256Hex(data)

	if err := errOf(s.putChunk(testUUID, 0, data[:4])); !errors.Is(err, icp.ErrNoUpload) {
		t.Fatalf("put_chunk before begin = %v; want NoUpload", err)
	}
	if err := errOf(s.commitAsset(testUUID)); !errors.Is(err, icp.ErrNoUpload) {
		t.Fatalf("commit before begin = %v; want NoUpload", err)
	}
	for _, tc := range []struct {
		name      string
		size      uint64
		hash      string
		chunkSize uint32
	}{
		{"uppercase hash", 10, "AB" + hash[2:], 4},
		{"short hash", 10, hash[:10], 4},
		{"zero chunk size", 10, hash, 0},
		{"chunk size over the limit", 10, hash, MaxChunkSize + 1},
		{"asset over the limit", 2 << 20, hash, 4},
	} {
		if err := errOf(s.beginAsset(testUUID, tc.size, tc.hash, tc.chunkSize)); !errors.Is(err, icp.ErrInvalidArgument) {
			t.Errorf("begin with %s = %v; want InvalidArgument", tc.name, err)
		}
	}

	up := s.beginAsset(testUUID, 10, hash, 4)
	if up.Ok == nil || up.Ok.ChunkCount != 3 || len(up.Ok.Received) != 0 {
		t.Fatalf("begin = %+v; want 3 chunks, none received", up)
	}
	for _, tc := range []struct {
		name  string
		index uint32
		data  []byte
	}{
		{"index out of range", 3, data[:2]},
		{"short full chunk", 0, data[:3]},
		{"long last chunk", 2, data[6:10]},
	} {
		if err := errOf(s.putChunk(testUUID, tc.index, tc.data)); !errors.Is(err, icp.ErrInvalidArgument) {
			t.Errorf("put_chunk with %s = %v; want InvalidArgument", tc.name, err)
		}
	}
	if held := s.putChunk(testUUID, 2, data[8:]); held.Ok == nil || *held.Ok != 1 {
		t.Fatalf("put_chunk 2 = %+v; want 1 held", held)
	}
	var incomplete *icp.IncompleteError
	if err := errOf(s.commitAsset(testUUID)); !errors.As(err, &incomplete) || !slices.Equal(incomplete.Missing, []uint32{0, 1}) {
		t.Fatalf("commit with chunks 0, 1 missing = %v", err)
	}

	// The same parameters resume; different ones start over.
	if up := s.beginAsset(testUUID, 10, hash, 4); up.Ok == nil || !slices.Equal(up.Ok.Received, []uint32{2}) {
		t.Fatalf("begin again = %+v; want chunk 2 received", up)
	}
	if up := s.beginAsset(testUUID, 10, hash, 5); up.Ok == nil || len(up.Ok.Received) != 0 || up.Ok.ChunkCount != 2 {
		t.Fatalf("begin with another chunk size = %+v; want a fresh upload of 2 chunks", up)
	}
	s.putChunk(testUUID, 0, data[:5])
	s.putChunk(testUUID, 1, data[5:])
	if a := s.commitAsset(testUUID); a.Ok == nil || a.Ok.ContentHash != hash || a.Ok.Size != 10 {
		t.Fatalf("commit = %+v; want %s", a, hash)
	}

	// Write-once: every write now answers AlreadyExists with the stored hash.
	for name, err := range map[string]error{
		"begin":     errOf(s.beginAsset(testUUID, 10, hash, 4)),
		"put_chunk": errOf(s.putChunk(testUUID, 0, data[:5])),
		"commit":    errOf(s.commitAsset(testUUID)),
	} {
		var exists *icp.AlreadyExistsError
		if !errors.As(err, &exists) || exists.ContentHash != hash {
			t.Errorf("%s after commit = %v; want AlreadyExists %s", name, err, hash)
		}
	}
	st := s.status(testUUID)
	if st.Ok == nil || st.Ok.Asset == nil || st.Ok.Upload != nil || st.Ok.Metadata != nil {
		t.Fatalf("status = %+v; want only the asset", st)
	}
}

func TestMemoryStore_hashMismatchDiscardsUpload(t *testing.T) {
	s := newMemoryStore(defaultLimits(1<<20), nil)
	wrong := sha256Hex([]byte("something else"))
	s.beginAsset(testUUID, 3, wrong, 4)
	s.putChunk(testUUID, 0, []byte("abc"))
	var mismatch *icp.HashMismatchError
	if err := errOf(s.commitAsset(testUUID)); !errors.As(err, &mismatch) || mismatch.Actual != sha256Hex([]byte("abc")) {
		t.Fatalf("commit = %v; want HashMismatch", err)
	}
	if st := s.status(testUUID); st.Ok.Upload != nil || st.Ok.Asset != nil {
		t.Fatalf("status after mismatch = %+v; want nothing", st)
	}
}

func TestMemoryStore_execute(t *testing.T) {
	s := newMemoryStore(defaultLimits(1<<20), nil)
	if _, rej := s.execute(principal.AnonymousID, "nope", nil); rej == nil || rej.errorCode != "IC0536" {
		t.Fatalf("unknown method = %+v; want IC0536", rej)
	}
	if _, rej := s.execute(principal.AnonymousID, icp.MethodStatus, []byte("DIDL garbage")); rej == nil || rej.errorCode != "IC0503" {
		t.Fatalf("garbage argument = %+v; want a trap", rej)
	}
}

// TestMemoryStore_restoreCountsUploads: a store rebuilt from saved memories (LoadFile) counts
// their unfinished uploads, so the bounds hold across a restart of the double: here the third
// upload drops the least recently touched of the two restored ones, and the bytes it declared.
func TestMemoryStore_restoreCountsUploads(t *testing.T) {
	lim := defaultLimits(0)
	lim.maxUploads = 2
	s := newMemoryStore(lim, nil)
	var at int64
	s.now = func() time.Time { at++; return time.Unix(0, at) }
	for _, id := range []string{"00000000-0000-0000-0000-000000000002", "00000000-0000-0000-0000-000000000001"} {
		if err := errOf(s.beginAsset(id, 4, sha256Hex([]byte("abcd")), 4)); err != nil {
			t.Fatal(err)
		}
	}
	r := restoreMemoryStore(lim, nil, s.memories)
	r.now = s.now
	if len(r.uploads) != 2 || r.pending != 8 {
		t.Fatalf("restored store counts %d uploads of %d bytes; want 2 of 8", len(r.uploads), r.pending)
	}
	if err := errOf(r.beginAsset("00000000-0000-0000-0000-000000000003", 4, sha256Hex([]byte("abcd")), 4)); err != nil {
		t.Fatal(err)
	}
	if st := r.status("00000000-0000-0000-0000-000000000002"); st.Ok == nil || st.Ok.Upload != nil {
		t.Errorf("the least recently touched upload survived: %+v", st)
	}
	if st := r.status("00000000-0000-0000-0000-000000000001"); st.Ok == nil || st.Ok.Upload == nil {
		t.Errorf("the more recent upload was dropped: %+v", st)
	}
	if len(r.uploads) != 2 || r.pending != 8 {
		t.Errorf("after the eviction the store counts %d uploads of %d bytes; want 2 of 8", len(r.uploads), r.pending)
	}
}
