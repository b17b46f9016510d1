package icpreplica

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/candid/idl"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/edgesync/edgesync/icp"
)

// Limits of the memory-store canister as the double hosts it.
const (
	// MaxChunkSize is the largest chunk_size begin_asset accepts; the ingress limit bounds
	// put_chunk messages anyway, this only catches nonsense early.
	MaxChunkSize = 2 << 20
	// DefaultMaxAssetSize bounds one asset, as the Motoko canister does (canister/src/Store.mo);
	// the shared scenarios check the two agree.
	DefaultMaxAssetSize = icp.MaxAssetSize
	// DefaultMaxUploads bounds the unfinished uploads held at once, as the canister does.
	DefaultMaxUploads = 64
	// DefaultMaxPendingBytes bounds the declared sizes of the unfinished uploads, summed.
	DefaultMaxPendingBytes = 1 << 30
	// DefaultUploadTTL is how long an unfinished upload may sit untouched before the next write
	// drops it.
	DefaultUploadTTL = 24 * time.Hour
)

// limits are the canister's bounds (Store.Limits in canister/src/Store.mo).
type limits struct {
	maxAssetSize    uint64
	maxUploads      int
	maxPendingBytes uint64
	uploadTTL       time.Duration
}

func defaultLimits(maxAssetSize uint64) limits {
	if maxAssetSize == 0 {
		maxAssetSize = DefaultMaxAssetSize
	}
	return limits{maxAssetSize: maxAssetSize, maxUploads: DefaultMaxUploads,
		maxPendingBytes: DefaultMaxPendingBytes, uploadTTL: DefaultUploadTTL}
}

// Reject codes and error codes a replica uses for what the double can get wrong.
const (
	rejectDestinationInvalid = 3
	rejectCanisterError      = 5
)

// reject is a canister call that did not reply.
type reject struct {
	code      uint64
	message   string
	errorCode string
}

// memoryStore is the canister's state and logic, per memory_store.did.
type memoryStore struct {
	limits limits
	now    func() time.Time // the canister's clock; time.Now but in the scenarios

	mu       sync.Mutex
	memories map[string]*memory
	access   *access
	// uploads are the memories with an unfinished upload and pending their declared sizes,
	// summed: what the bounds count.
	uploads map[string]bool
	pending uint64
}

type memory struct {
	Metadata *blob
	Asset    *blob
	Upload   *upload
}

type blob struct {
	Hash string
	Data []byte
}

type upload struct {
	TotalSize uint64
	Hash      string
	ChunkSize uint32
	Chunks    map[uint32][]byte
	Touched   time.Time // the last begin_asset or accepted put_chunk: the bounds drop the oldest
}

func (u *upload) chunkCount() uint32 {
	return uint32((u.TotalSize + uint64(u.ChunkSize) - 1) / uint64(u.ChunkSize))
}

func (u *upload) chunkLen(i uint32) int {
	return int(min(uint64(u.ChunkSize), u.TotalSize-uint64(i)*uint64(u.ChunkSize)))
}

func (u *upload) wire() icp.Upload {
	received := make([]uint32, 0, len(u.Chunks))
	for i := range u.Chunks {
		received = append(received, i)
	}
	slices.Sort(received)
	return icp.Upload{TotalSize: u.TotalSize, ContentHash: u.Hash, ChunkSize: u.ChunkSize,
		ChunkCount: u.chunkCount(), Received: received}
}

func newMemoryStore(lim limits, acc *access) *memoryStore {
	return restoreMemoryStore(lim, acc, map[string]*memory{})
}

// restoreMemoryStore makes a store of memories (a loaded snapshot), recounting its unfinished
// uploads. An upload saved without a touch time (by an older double) counts as touched now.
func restoreMemoryStore(lim limits, acc *access, memories map[string]*memory) *memoryStore {
	if acc == nil {
		acc = newAccess(nil, nil)
	}
	s := &memoryStore{limits: lim, now: time.Now, memories: memories, access: acc, uploads: map[string]bool{}}
	for uuid, m := range memories {
		if u := m.Upload; u != nil {
			if u.Touched.IsZero() {
				u.Touched = s.now()
			}
			s.uploads[uuid] = true
			s.pending += u.TotalSize
		}
	}
	return s
}

// dropUpload discards the unfinished upload of uuid, if any. The caller holds s.mu.
func (s *memoryStore) dropUpload(uuid string, m *memory) {
	if m.Upload != nil {
		s.pending -= m.Upload.TotalSize
		m.Upload = nil
		delete(s.uploads, uuid)
	}
}

// pruneExpired drops the uploads untouched for longer than the TTL, as the canister does on
// every write that concerns uploads: abandoned uploads must not fill it. The caller holds s.mu.
func (s *memoryStore) pruneExpired(now time.Time) {
	for uuid := range s.uploads {
		if m := s.memories[uuid]; now.Sub(m.Upload.Touched) > s.limits.uploadTTL {
			s.dropUpload(uuid, m)
		}
	}
}

// makeRoom drops the least recently touched uploads until one of size bytes fits the bounds; the
// canister's order (keys ascending, the first of equal touch times) breaks ties. The caller
// holds s.mu.
func (s *memoryStore) makeRoom(size uint64) {
	for len(s.uploads) > 0 && (len(s.uploads) >= s.limits.maxUploads || s.pending+size > s.limits.maxPendingBytes) {
		var oldest string
		for _, uuid := range slices.Sorted(maps.Keys(s.uploads)) {
			if oldest == "" || s.memories[uuid].Upload.Touched.Before(s.memories[oldest].Upload.Touched) {
				oldest = uuid
			}
		}
		s.dropUpload(oldest, s.memories[oldest])
	}
}

// isQuery reports whether method is a query method of the canister.
func isQuery(method string) bool { return method == icp.MethodStatus || method == methodWriters }

// Methods of the writer list; only the double and the canister use them.
const (
	methodAuthorize   = "authorize"
	methodDeauthorize = "deauthorize"
	methodWriters     = "writers"
)

// execute runs a method (an update, or a query called either way) for caller and returns its
// Candid reply.
func (s *memoryStore) execute(caller principal.Principal, method string, arg []byte) ([]byte, *reject) {
	var (
		reply any
		err   error
	)
	// The writer check comes before anything else, as in the canister. One difference no
	// well-formed call sees: the canister decodes the arguments first, so a stranger's malformed
	// call traps there instead of answering Unauthorized.
	if isWrite(method) {
		s.mu.Lock()
		may := s.access.mayWrite(caller)
		s.mu.Unlock()
		if !may {
			return encodeReply(unauthorizedReply(method, caller))
		}
	}
	switch method {
	case methodAuthorize, methodDeauthorize:
		var writer principal.Principal
		if err = candid.Unmarshal(arg, []any{&writer}); err == nil {
			reply = s.authorize(caller, writer, method == methodAuthorize)
		}
	case methodWriters:
		if err = candid.Unmarshal(arg, []any{}); err == nil {
			reply = s.writerList()
		}
	case icp.MethodPutMetadata:
		var uuid string
		var json []byte
		if err = candid.Unmarshal(arg, []any{&uuid, &json}); err == nil {
			reply = s.putMetadata(uuid, json)
		}
	case icp.MethodBeginAsset:
		var uuid, hash string
		var size uint64
		var chunkSize uint32
		if err = candid.Unmarshal(arg, []any{&uuid, &size, &hash, &chunkSize}); err == nil {
			reply = s.beginAsset(uuid, size, hash, chunkSize)
		}
	case icp.MethodPutChunk:
		var uuid string
		var index uint32
		var data []byte
		if uuid, index, data, err = icp.DecodePutChunkArg(arg); err == nil {
			reply = s.putChunk(uuid, index, data)
		}
	case icp.MethodCommitAsset:
		var uuid string
		if err = candid.Unmarshal(arg, []any{&uuid}); err == nil {
			reply = s.commitAsset(uuid)
		}
	case icp.MethodStatus:
		var uuid string
		if err = candid.Unmarshal(arg, []any{&uuid}); err == nil {
			reply = s.status(uuid)
		}
	default:
		return nil, &reject{rejectDestinationInvalid,
			fmt.Sprintf("Canister has no update method '%s'", method), "IC0536"}
	}
	if err != nil {
		return nil, trap(fmt.Sprintf("failed to decode call arguments: %v", err))
	}
	return encodeReply(reply)
}

func encodeReply(reply any) ([]byte, *reject) {
	out, err := candid.Marshal([]any{reply})
	if err != nil {
		return nil, trap(fmt.Sprintf("failed to encode reply: %v", err))
	}
	return out, nil
}

func trap(msg string) *reject {
	return &reject{rejectCanisterError,
		"Error from Canister: Canister called `ic0.trap` with message: " + msg, "IC0503"}
}

func ok[T any](v T) icp.Result[T] { return icp.Result[T]{Ok: &v} }

func fail[T any](e icp.ErrorVariant) icp.Result[T] { return icp.Result[T]{Err: &e} }

func invalidUUID[T any](uuid string) icp.Result[T] {
	return fail[T](icp.ErrorVariant{InvalidUuid: &uuid})
}

func alreadyExists[T any](hash string) icp.Result[T] {
	return fail[T](icp.ErrorVariant{AlreadyExists: &icp.HashRecord{ContentHash: hash}})
}

func invalidArgument[T any](format string, args ...any) icp.Result[T] {
	msg := fmt.Sprintf(format, args...)
	return fail[T](icp.ErrorVariant{InvalidArgument: &msg})
}

func noUpload[T any]() icp.Result[T] {
	return fail[T](icp.ErrorVariant{NoUpload: &idl.Null{}})
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// memory returns the entry for uuid, creating it. The caller holds s.mu.
func (s *memoryStore) memory(uuid string) *memory {
	m, found := s.memories[uuid]
	if !found {
		m = &memory{}
		s.memories[uuid] = m
	}
	return m
}

func (s *memoryStore) putMetadata(uuid string, json []byte) icp.Result[icp.Artifact] {
	if !icp.ValidUUID(uuid) {
		return invalidUUID[icp.Artifact](uuid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.memory(uuid)
	if m.Metadata != nil {
		return alreadyExists[icp.Artifact](m.Metadata.Hash)
	}
	m.Metadata = &blob{Hash: sha256Hex(json), Data: json}
	return ok(icp.Artifact{ContentHash: m.Metadata.Hash, Size: uint64(len(json))})
}

func (s *memoryStore) beginAsset(uuid string, size uint64, hash string, chunkSize uint32) icp.Result[icp.Upload] {
	if !icp.ValidUUID(uuid) {
		return invalidUUID[icp.Upload](uuid)
	}
	switch {
	case !icp.ValidHash(hash):
		return invalidArgument[icp.Upload]("sha256 %q is not 64 lowercase hex digits", hash)
	case chunkSize == 0 || chunkSize > MaxChunkSize:
		return invalidArgument[icp.Upload]("chunk_size %d is not in 1..%d", chunkSize, MaxChunkSize)
	case size > s.limits.maxAssetSize:
		return invalidArgument[icp.Upload]("total_size %d exceeds the canister's limit of %d bytes", size, s.limits.maxAssetSize)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.memory(uuid)
	if m.Asset != nil {
		return alreadyExists[icp.Upload](m.Asset.Hash)
	}
	now := s.now()
	s.pruneExpired(now)
	if u := m.Upload; u != nil {
		if u.TotalSize == size && u.Hash == hash && u.ChunkSize == chunkSize {
			u.Touched = now
			return ok(u.wire())
		}
		// Different parameters mean different content: what was sent so far is of no use.
		s.dropUpload(uuid, m)
	}
	s.makeRoom(size)
	m.Upload = &upload{TotalSize: size, Hash: hash, ChunkSize: chunkSize, Chunks: map[uint32][]byte{}, Touched: now}
	s.uploads[uuid] = true
	s.pending += size
	return ok(m.Upload.wire())
}

func (s *memoryStore) putChunk(uuid string, index uint32, data []byte) icp.Result[uint32] {
	if !icp.ValidUUID(uuid) {
		return invalidUUID[uint32](uuid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.memory(uuid)
	if m.Asset != nil {
		return alreadyExists[uint32](m.Asset.Hash)
	}
	now := s.now()
	s.pruneExpired(now)
	switch u := m.Upload; {
	case u == nil:
		return noUpload[uint32]()
	case index >= u.chunkCount():
		return invalidArgument[uint32]("chunk index %d out of range: the upload has %d chunks", index, u.chunkCount())
	case len(data) != u.chunkLen(index):
		return invalidArgument[uint32]("chunk %d has %d bytes, want %d", index, len(data), u.chunkLen(index))
	default:
		// The first copy of a chunk wins, as in the canister, which may have hashed it already.
		if _, held := u.Chunks[index]; !held {
			u.Chunks[index] = data
		}
		u.Touched = now
		return ok(uint32(len(u.Chunks)))
	}
}

func (s *memoryStore) commitAsset(uuid string) icp.Result[icp.Artifact] {
	if !icp.ValidUUID(uuid) {
		return invalidUUID[icp.Artifact](uuid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.memory(uuid)
	if m.Asset != nil {
		return alreadyExists[icp.Artifact](m.Asset.Hash)
	}
	s.pruneExpired(s.now())
	u := m.Upload
	if u == nil {
		return noUpload[icp.Artifact]()
	}
	var missing []uint32
	for i := range u.chunkCount() {
		if _, held := u.Chunks[i]; !held {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		return fail[icp.Artifact](icp.ErrorVariant{Incomplete: &icp.MissingRecord{Missing: missing}})
	}
	data := make([]byte, 0, u.TotalSize)
	for i := range u.chunkCount() {
		data = append(data, u.Chunks[i]...)
	}
	s.dropUpload(uuid, m) // whatever the outcome: a failed check means some chunk is wrong, and not which
	if got := sha256Hex(data); got != u.Hash {
		return fail[icp.Artifact](icp.ErrorVariant{HashMismatch: &icp.MismatchRecord{Expected: u.Hash, Actual: got}})
	}
	m.Asset = &blob{Hash: u.Hash, Data: data}
	return ok(icp.Artifact{ContentHash: u.Hash, Size: u.TotalSize})
}

func (s *memoryStore) status(uuid string) icp.Result[icp.Status] {
	if !icp.ValidUUID(uuid) {
		return invalidUUID[icp.Status](uuid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var st icp.Status
	m, found := s.memories[uuid]
	if !found {
		return ok(st)
	}
	if m.Metadata != nil {
		st.Metadata = &icp.Artifact{ContentHash: m.Metadata.Hash, Size: uint64(len(m.Metadata.Data))}
	}
	if m.Asset != nil {
		st.Asset = &icp.Artifact{ContentHash: m.Asset.Hash, Size: uint64(len(m.Asset.Data))}
	}
	if m.Upload != nil {
		up := m.Upload.wire()
		st.Upload = &up
	}
	return ok(st)
}
