package api

import (
	"encoding/base64"
	"encoding/json"
	"github.com/edgesync/edgesync/domain"
	"strconv"
	"strings"
)

// The enums of CONTRACT section 3.1.
var (
	memoryTypes = domain.MemoryTypes()
	artifacts   = domain.Artifacts()
	backends    = domain.Backends()
	syncStates  = domain.SyncStates()
)

func oneOf(v string, set []string) bool {
	for _, s := range set {
		if v == s {
			return true
		}
	}
	return false
}

func enumError(field, v string, set []string) *apiError {
	return badRequest(field + " " + strconv.Quote(truncate(v, 64)) + " is not one of " + strings.Join(set, ", "))
}

func uuidError(field, v string) *apiError {
	return badRequest(field + " " + strconv.Quote(truncate(v, 64)) + " is not a canonical UUID (lowercase, hyphenated: 0b7f6c3e-1d2a-4c5b-9e8f-123456789abc)")
}

// normalizeHash accepts a SHA-256 digest as 64 hex digits, optionally prefixed
// "sha256:", in either case, and returns the stored form: 64 lowercase hex
// digits without prefix (what the ICP mirror writes and the canister checks).
func normalizeHash(h string) (string, bool) {
	h = strings.TrimPrefix(h, "sha256:")
	if len(h) != 64 {
		return "", false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return "", false
		}
	}
	return strings.ToLower(h), true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// pageLimit parses ?limit= (default def, 1..max).
func pageLimit(v string, def, max int) (int, *apiError) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		return 0, badRequest("limit must be a whole number from 1 to " + strconv.Itoa(max))
	}
	return n, nil
}

// Cursors are opaque to clients: base64url of a small JSON object. Decoding
// checks the shape, so a tampered cursor is a 400, never a 500.
func encodeCursor(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string, v any) *apiError {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) == 0 || json.Unmarshal(b, v) != nil {
		return badRequest("cursor is malformed: pass next_cursor from the previous page unchanged")
	}
	return nil
}
