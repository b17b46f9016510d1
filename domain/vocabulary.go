package domain

// Memory types: the values of memory_type_t, in its declared order.
const (
	MemoryImage    = "image"
	MemoryVideo    = "video"
	MemoryNote     = "note"
	MemoryDocument = "document"
	MemoryAudio    = "audio"
)

// MemoryTypes returns the memory types in the enum's order (a fresh slice).
func MemoryTypes() []string {
	return []string{MemoryImage, MemoryVideo, MemoryNote, MemoryDocument, MemoryAudio}
}

// IsMemoryType reports whether s is a memory type.
func IsMemoryType(s string) bool {
	switch s {
	case MemoryImage, MemoryVideo, MemoryNote, MemoryDocument, MemoryAudio:
		return true
	}
	return false
}

// Backends: the values of backend_t.
const (
	BackendNeon = "neon-db"
	BackendBlob = "vercel-blob"
	BackendICP  = "icp-canister"
)

// Backends returns the backends in the enum's order.
func Backends() []string { return []string{BackendNeon, BackendBlob, BackendICP} }

// IsBackend reports whether s is a backend.
func IsBackend(s string) bool {
	return s == BackendNeon || s == BackendBlob || s == BackendICP
}

// Artifacts: the values of artifact_t.
const (
	ArtifactMetadata = "metadata"
	ArtifactAsset    = "asset"
)

// Artifacts returns the artifacts in the enum's order.
func Artifacts() []string { return []string{ArtifactMetadata, ArtifactAsset} }

// IsArtifact reports whether s is an artifact.
func IsArtifact(s string) bool { return s == ArtifactMetadata || s == ArtifactAsset }

// Sync states: the values of sync_t.
const (
	SyncIdle      = "idle"
	SyncMigrating = "migrating"
	SyncFailed    = "failed"
)

// SyncStates returns the sync states in the enum's order.
func SyncStates() []string { return []string{SyncIdle, SyncMigrating, SyncFailed} }

// IsSyncState reports whether s is a sync state.
func IsSyncState(s string) bool { return s == SyncIdle || s == SyncMigrating || s == SyncFailed }

// Gallery statuses (the gallery_presence view's status column).
const (
	GalleryEmpty         = "empty"
	GalleryWeb2Only      = "web2_only"
	GalleryPartial       = "partial"
	GalleryStoredForever = "stored_forever"
)

// GalleryStatuses returns every gallery status.
func GalleryStatuses() []string {
	return []string{GalleryEmpty, GalleryWeb2Only, GalleryPartial, GalleryStoredForever}
}

// ICP edge policies when a memory row is deleted.
const (
	PolicyKeep   = "keep"
	PolicyDelete = "delete"
)

// Event operations as subjects and envelopes spell them.
const (
	OpCreated   = "created"
	OpUpdated   = "updated"
	OpDeleted   = "deleted"
	OpSnapshot  = "snapshot"
	OpTruncated = "truncated"
)

// CanonicalUUID reports whether s is a UUID as Postgres prints it: 36
// characters, lowercase hex digits in groups of 8-4-4-4-12 separated by
// hyphens. Memory ids travel as this text everywhere (events, the API, the
// canister's keys), so any other spelling is refused rather than normalised:
// two spellings must never name two memories.
func CanonicalUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}
