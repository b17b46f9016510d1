package api

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/edgesync/edgesync/domain"
)

func FuzzDecodeEdge(f *testing.F) {
	seeds := []string{
		`{"memory_id":"0b7f6c3e-1d2a-4c5b-9e8f-123456789abc","memory_type":"image","artifact":"asset","backend":"icp-canister","present":true,"content_hash":"sha256:` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `","size_bytes":5,"sync_state":"idle","last_synced_at":"2024-01-01T00:00:00Z"}`,
		`{"memory_id":"0B7F6C3E-1D2A-4C5B-9E8F-123456789ABC"}`,
		`{"size_bytes":-1}`, `{"size_bytes":1e400}`, `{"last_synced_at":"9999-12-31T23:59:59Z"}`,
		`[]`, `null`, `{} {}`, `{"location":"\u0000"}`, `"`, ``, `{"present":"yes"}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		r := http.MaxBytesReader(rec, readCloser{bytes.NewReader(body)}, 1<<20)
		in, ae := decodeEdge(r)
		if ae != nil {
			if ae.Status != http.StatusBadRequest && ae.Status != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d for %q", ae.Status, body)
			}
			if ae.Message == "" || ae.Code == "" {
				t.Fatalf("empty error for %q", body)
			}
			return
		}
		// Whatever decodes is storable as it is.
		if !domain.CanonicalUUID(in.MemoryID) || !oneOf(in.MemoryType, memoryTypes) || !oneOf(in.Artifact, artifacts) ||
			!oneOf(in.Backend, backends) || !oneOf(in.SyncState, syncStates) {
			t.Fatalf("accepted invalid edge %+v from %q", in, body)
		}
		if in.SizeBytes != nil && *in.SizeBytes < 0 {
			t.Fatalf("negative size from %q", body)
		}
		if in.ContentHash != nil && len(*in.ContentHash) != 64 {
			t.Fatalf("hash %q from %q", *in.ContentHash, body)
		}
		for _, s := range []*string{in.Location, in.SyncError} {
			if s != nil && bytes.IndexByte([]byte(*s), 0) >= 0 {
				t.Fatalf("NUL accepted from %q", body)
			}
		}
	})
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }
