package icpreplica

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/candid/idl"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/edgesync/edgesync/icp"
)

// scenarioFile holds the shared scenarios; tools/node/test-canister.js runs the same file
// against the Motoko canister in the interpreter.
const scenarioFile = "../../canister/scenarios/memory_store.json"

type scenarioSuite struct {
	Principals map[string]string `json:"principals"`
	Limits     struct {
		MaxAssetSize    uint64 `json:"max_asset_size"`
		MaxChunkSize    uint32 `json:"max_chunk_size"`
		MaxUploads      int    `json:"max_uploads"`
		MaxPendingBytes uint64 `json:"max_pending_bytes"`
		UploadTTLNanos  int64  `json:"upload_ttl_ns"`
	} `json:"limits"`
	Scenarios []struct {
		Name string `json:"name"`
		// Limits, when present, replace some of the canister's bounds for the scenario, so that
		// a few calls can reach them.
		Limits *struct {
			MaxUploads      *int    `json:"max_uploads"`
			MaxPendingBytes *uint64 `json:"max_pending_bytes"`
			UploadTTLNanos  *int64  `json:"upload_ttl_ns"`
		} `json:"limits"`
		Steps []struct {
			Caller string            `json:"caller"`
			Call   string            `json:"call"`
			Args   []json.RawMessage `json:"args"`
			Want   any               `json:"want"`
			At     int64             `json:"at"` // the canister's clock, in ns since the epoch; 0 when absent
		} `json:"steps"`
	} `json:"scenarios"`
}

// TestScenarios runs the shared scenarios against the double's canister, through Candid as a
// call carries it, with each step's caller as the sender.
func TestScenarios(t *testing.T) {
	raw, err := os.ReadFile(scenarioFile)
	if err != nil {
		t.Fatal(err)
	}
	var suite scenarioSuite
	if err := json.Unmarshal(raw, &suite); err != nil {
		t.Fatalf("%s: %v", scenarioFile, err)
	}
	if l := suite.Limits; l.MaxAssetSize != DefaultMaxAssetSize || l.MaxChunkSize != MaxChunkSize || l.MaxUploads != DefaultMaxUploads ||
		l.MaxPendingBytes != DefaultMaxPendingBytes || time.Duration(l.UploadTTLNanos) != DefaultUploadTTL {
		t.Fatalf("the scenarios' limits %+v differ from the double's (%d, %d, %d, %d, %s)", suite.Limits,
			DefaultMaxAssetSize, MaxChunkSize, DefaultMaxUploads, DefaultMaxPendingBytes, DefaultUploadTTL)
	}
	names := map[string]principal.Principal{}
	byText := map[string]string{}
	for name, text := range suite.Principals {
		p, err := principal.Decode(text)
		if err != nil {
			t.Fatalf("principal %s: %v", name, err)
		}
		names[name], byText[text] = p, name
	}
	steps := 0
	for _, sc := range suite.Scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			lim := defaultLimits(0)
			if l := sc.Limits; l != nil {
				lim.maxUploads = cmp.Or(deref(l.MaxUploads), lim.maxUploads)
				lim.maxPendingBytes = cmp.Or(deref(l.MaxPendingBytes), lim.maxPendingBytes)
				lim.uploadTTL = cmp.Or(time.Duration(deref(l.UploadTTLNanos)), lim.uploadTTL)
			}
			store := newMemoryStore(lim, newAccess([]principal.Principal{names["controller"]}, []principal.Principal{names["writer"]}))
			var at int64
			store.now = func() time.Time { return time.Unix(0, at) }
			for i, st := range sc.Steps {
				at = st.At
				arg, err := encodeScenarioArgs(st.Call, st.Args, names)
				if err != nil {
					t.Fatalf("step %d (%s): %v", i, st.Call, err)
				}
				reply, rej := store.execute(names[st.Caller], st.Call, arg)
				if rej != nil {
					t.Fatalf("step %d (%s): rejected: %s", i, st.Call, rej.message)
				}
				got, err := normalizeReply(st.Call, reply, byText)
				if err != nil {
					t.Fatalf("step %d (%s): %v", i, st.Call, err)
				}
				if want := expandHashes(st.Want); !matches(got, want) {
					t.Errorf("step %d: %s %s by %s\n got %s\nwant %s", i, st.Call, args(st.Args), st.Caller, js(got), js(want))
				}
			}
		})
		steps += len(sc.Steps)
	}
	if steps < 50 {
		t.Errorf("only %d steps ran; the suite has fewer scenarios than expected", steps)
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func args(raw []json.RawMessage) string {
	parts := make([]string, len(raw))
	for i, r := range raw {
		parts[i] = string(r)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func sha256Text(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// expandHashes replaces every "sha256:X" string by the hex SHA-256 of X.
func expandHashes(v any) any {
	switch v := v.(type) {
	case string:
		if rest, ok := strings.CutPrefix(v, "sha256:"); ok {
			return sha256Text(rest)
		}
		return v
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = expandHashes(e)
		}
		return out
	case map[string]any:
		out := map[string]any{}
		for k, e := range v {
			out[k] = expandHashes(e)
		}
		return out
	}
	return v
}

// matches is deep equality where a wanted "*" matches any string.
func matches(got, want any) bool {
	switch w := want.(type) {
	case string:
		g, ok := got.(string)
		return ok && (w == "*" || g == w)
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return false
		}
		for i := range w {
			if !matches(g[i], w[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok || len(g) != len(w) {
			return false
		}
		for k := range w {
			if gv, found := g[k]; !found || !matches(gv, w[k]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(got, want)
}

func encodeScenarioArgs(method string, raw []json.RawMessage, names map[string]principal.Principal) ([]byte, error) {
	str := func(i int) (string, error) {
		var s string
		if i >= len(raw) {
			return "", fmt.Errorf("argument %d missing", i)
		}
		return s, json.Unmarshal(raw[i], &s)
	}
	num := func(i int) (uint64, error) {
		var n uint64
		if i >= len(raw) {
			return 0, fmt.Errorf("argument %d missing", i)
		}
		return n, json.Unmarshal(raw[i], &n)
	}
	var values []any
	switch method {
	case icp.MethodPutMetadata, icp.MethodPutChunk:
		uuid, err1 := str(0)
		var data string
		var err2, err3 error
		var index uint64
		if method == icp.MethodPutChunk {
			index, err2 = num(1)
			data, err3 = str(2)
			values = []any{uuid, uint32(index), []byte(data)}
		} else {
			data, err2 = str(1)
			values = []any{uuid, []byte(data)}
		}
		if err := firstErr(err1, err2, err3); err != nil {
			return nil, err
		}
	case icp.MethodBeginAsset:
		uuid, err1 := str(0)
		size, err2 := num(1)
		hash, err3 := str(2)
		chunk, err4 := num(3)
		if err := firstErr(err1, err2, err3, err4); err != nil {
			return nil, err
		}
		values = []any{uuid, size, expandHashes(hash), uint32(chunk)}
	case icp.MethodCommitAsset, icp.MethodStatus:
		uuid, err := str(0)
		if err != nil {
			return nil, err
		}
		values = []any{uuid}
	case methodAuthorize, methodDeauthorize:
		name, err := str(0)
		if err != nil {
			return nil, err
		}
		p, ok := names[name]
		if !ok {
			return nil, fmt.Errorf("unknown principal %q", name)
		}
		values = []any{p}
	case methodWriters:
	default:
		return nil, fmt.Errorf("unknown method %q", method)
	}
	return candid.Marshal(values)
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// normalizeReply decodes a Candid reply and turns it into the scenarios' JSON shape.
func normalizeReply(method string, reply []byte, names map[string]string) (any, error) {
	name := func(p principal.Principal) string {
		if n, ok := names[p.String()]; ok {
			return n
		}
		return p.String()
	}
	var v any
	var err error
	switch method {
	case icp.MethodPutMetadata, icp.MethodCommitAsset:
		v, err = decodeResult[icp.Artifact](reply, name)
	case icp.MethodBeginAsset:
		v, err = decodeResult[icp.Upload](reply, name)
	case icp.MethodPutChunk:
		v, err = decodeResult[uint32](reply, name)
	case icp.MethodStatus:
		v, err = decodeResult[icp.Status](reply, name)
	case methodAuthorize, methodDeauthorize:
		v, err = decodeResult[idl.Null](reply, name)
	case methodWriters:
		var ps []principal.Principal
		if err = candid.Unmarshal(reply, []any{&ps}); err == nil {
			out := []any{}
			for _, p := range ps {
				out = append(out, name(p))
			}
			v = out
		}
	}
	if err != nil {
		return nil, fmt.Errorf("decode reply: %w", err)
	}
	// Through JSON, so numbers and absent options compare as in the scenario file.
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	return out, json.Unmarshal(b, &out)
}

func decodeResult[T any](reply []byte, name func(principal.Principal) string) (any, error) {
	var r icp.Result[T]
	if err := candid.Unmarshal(reply, []any{&r}); err != nil {
		return nil, err
	}
	if r.Ok != nil {
		return map[string]any{"Ok": okValue(*r.Ok)}, nil
	}
	if r.Err == nil {
		return nil, fmt.Errorf("neither Ok nor Err")
	}
	e := r.Err
	var out any
	switch {
	case e.InvalidUuid != nil:
		out = map[string]any{"InvalidUuid": *e.InvalidUuid}
	case e.AlreadyExists != nil:
		out = map[string]any{"AlreadyExists": map[string]any{"content_hash": e.AlreadyExists.ContentHash}}
	case e.HashMismatch != nil:
		out = map[string]any{"HashMismatch": map[string]any{"expected": e.HashMismatch.Expected, "actual": e.HashMismatch.Actual}}
	case e.NoUpload != nil:
		out = map[string]any{"NoUpload": nil}
	case e.Incomplete != nil:
		out = map[string]any{"Incomplete": map[string]any{"missing": orEmpty(e.Incomplete.Missing)}}
	case e.InvalidArgument != nil:
		out = map[string]any{"InvalidArgument": *e.InvalidArgument}
	case e.Unauthorized != nil:
		p, err := principal.Decode(*e.Unauthorized)
		if err != nil {
			return nil, fmt.Errorf("Unauthorized carries %q, not a principal: %w", *e.Unauthorized, err)
		}
		out = map[string]any{"Unauthorized": name(p)}
	default:
		return nil, fmt.Errorf("unknown Err variant")
	}
	return map[string]any{"Err": out}, nil
}

func orEmpty(s []uint32) []uint32 {
	if s == nil {
		return []uint32{}
	}
	return s
}

func artifactJSON(a *icp.Artifact) any {
	if a == nil {
		return nil
	}
	return map[string]any{"content_hash": a.ContentHash, "size": a.Size}
}

func uploadJSON(u *icp.Upload) any {
	if u == nil {
		return nil
	}
	return map[string]any{"total_size": u.TotalSize, "content_hash": u.ContentHash, "chunk_size": u.ChunkSize,
		"chunk_count": u.ChunkCount, "received": orEmpty(u.Received)}
}

func okValue(v any) any {
	switch v := v.(type) {
	case icp.Artifact:
		return artifactJSON(&v)
	case icp.Upload:
		return uploadJSON(&v)
	case icp.Status:
		return map[string]any{"metadata": artifactJSON(v.Metadata), "asset": artifactJSON(v.Asset), "upload": uploadJSON(v.Upload)}
	case idl.Null:
		return nil
	}
	return v
}
