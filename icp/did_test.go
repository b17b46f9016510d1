package icp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/candid/did"
	"github.com/aviate-labs/agent-go/candid/idl"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/edgesync/edgesync/internal/didtest"
)

// TestDID_matchesGoTypes parses memory_store.did with agent-go's Candid parser and checks that
// every method's argument and result types are exactly those the Go types encode as.
func TestDID_matchesGoTypes(t *testing.T) {
	desc, err := did.ParseDID([]rune(DID))
	if err != nil {
		t.Fatalf("parse memory_store.did: %v", err)
	}
	defs := map[string]did.Data{}
	for _, d := range desc.Definitions {
		if typ, ok := d.(did.Type); ok {
			defs[typ.Id] = typ.Data
		}
	}
	if len(desc.Services) != 1 {
		t.Fatalf("memory_store.did has %d services; want 1", len(desc.Services))
	}
	goTypes := map[string]struct {
		args, results []any
		query         bool
	}{
		MethodPutMetadata: {[]any{"", []byte{}}, []any{Result[Artifact]{}}, false},
		MethodBeginAsset:  {[]any{"", uint64(0), "", uint32(0)}, []any{Result[Upload]{}}, false},
		MethodPutChunk:    {[]any{"", uint32(0), []byte{}}, []any{Result[uint32]{}}, false},
		MethodCommitAsset: {[]any{""}, []any{Result[Artifact]{}}, false},
		MethodStatus:      {[]any{""}, []any{Result[Status]{}}, true},
		"authorize":       {[]any{principal.Principal{}}, []any{Result[idl.Null]{}}, false},
		"deauthorize":     {[]any{principal.Principal{}}, []any{Result[idl.Null]{}}, false},
		"writers":         {nil, []any{[]principal.Principal{}}, true},
	}
	seen := map[string]bool{}
	for _, m := range desc.Services[0].Methods {
		seen[m.Name] = true
		want, ok := goTypes[m.Name]
		if !ok {
			t.Errorf("method %s is in the .did but has no Go counterpart", m.Name)
			continue
		}
		t.Run(m.Name, func(t *testing.T) {
			query := m.Func.Annotation != nil && *m.Func.Annotation == "query"
			if query != want.query {
				t.Errorf("query annotation = %v; want %v", query, want.query)
			}
			compare(t, "arguments", defs, m.Func.ArgTypes, want.args)
			compare(t, "results", defs, m.Func.ResTypes, want.results)
		})
	}
	for name := range goTypes {
		if !seen[name] {
			t.Errorf("method %s has Go types but is missing from the .did", name)
		}
	}
}

func compare(t *testing.T, what string, defs map[string]did.Data, tuple did.Tuple, values []any) {
	t.Helper()
	if len(tuple) != len(values) {
		t.Fatalf("%s: .did has %d, Go has %d", what, len(tuple), len(values))
	}
	for i, arg := range tuple {
		fromDID, err := didtest.IDLType(defs, arg.Data)
		if err != nil {
			t.Fatalf("%s %d: %v", what, i, err)
		}
		fromGo, err := idl.TypeOf(values[i])
		if err != nil {
			t.Fatalf("%s %d: %v", what, i, err)
		}
		if fromDID.String() != fromGo.String() {
			t.Errorf("%s %d:\n .did: %s\n   Go: %s", what, i, fromDID, fromGo)
		}
	}
}

// TestResult_roundTrip encodes every result shape with agent-go's Candid and decodes it back.
func TestResult_roundTrip(t *testing.T) {
	msg := "bad"
	fail := func(e ErrorVariant) Result[Artifact] { return Result[Artifact]{Err: &e} }
	roundTrip(t, Result[Artifact]{Ok: &Artifact{ContentHash: strings.Repeat("a", 64), Size: 7}})
	roundTrip(t, Result[Upload]{Ok: &Upload{TotalSize: 10, ContentHash: "h", ChunkSize: 4, ChunkCount: 3, Received: []uint32{0, 2}}})
	roundTrip(t, Result[uint32]{Ok: new(uint32)})
	roundTrip(t, Result[Status]{Ok: &Status{Metadata: &Artifact{ContentHash: "m", Size: 1}}})
	roundTrip(t, Result[Status]{Ok: &Status{}})
	roundTrip(t, fail(ErrorVariant{InvalidUuid: &msg}))
	roundTrip(t, fail(ErrorVariant{AlreadyExists: &HashRecord{ContentHash: "x"}}))
	roundTrip(t, fail(ErrorVariant{HashMismatch: &MismatchRecord{Expected: "e", Actual: "a"}}))
	roundTrip(t, fail(ErrorVariant{NoUpload: &idl.Null{}}))
	roundTrip(t, fail(ErrorVariant{Incomplete: &MissingRecord{Missing: []uint32{1, 2}}}))
	roundTrip(t, fail(ErrorVariant{InvalidArgument: &msg}))
	roundTrip(t, fail(ErrorVariant{Unauthorized: &msg}))
	roundTrip(t, Result[idl.Null]{Ok: &idl.Null{}})
}

func roundTrip[T any](t *testing.T, v T) {
	t.Helper()
	b, err := candid.Marshal([]any{v})
	if err != nil {
		t.Fatalf("marshal %+v: %v", v, err)
	}
	var got T
	if err := candid.Unmarshal(b, []any{&got}); err != nil {
		t.Fatalf("unmarshal %T: %v", v, err)
	}
	if !reflect.DeepEqual(got, v) {
		t.Errorf("round trip of %T changed it:\n sent %s\n  got %s", v, dump(v), dump(got))
	}
}

func dump(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestPutChunkArg(t *testing.T) {
	const uuid = "123e4567-e89b-12d3-a456-426614174000"
	for _, size := range []int{0, 1, 63, 64, 127, 128, 70000} {
		data := bytes.Repeat([]byte{0xab}, size)
		t.Run(fmt.Sprintf("%d bytes", size), func(t *testing.T) {
			// Our encoding decodes with agent-go's generic decoder...
			var gotUUID string
			var gotIndex uint32
			var gotData []byte
			if err := candid.Unmarshal(EncodePutChunkArg(uuid, 9, data), []any{&gotUUID, &gotIndex, &gotData}); err != nil {
				t.Fatalf("generic decode of ours: %v", err)
			}
			if gotUUID != uuid || gotIndex != 9 || !bytes.Equal(gotData, data) {
				t.Fatalf("generic decode of ours = %q, %d, %d bytes", gotUUID, gotIndex, len(gotData))
			}
			// ...and agent-go's encoding decodes with ours.
			generic, err := candid.Marshal([]any{uuid, uint32(9), data})
			if err != nil {
				t.Fatal(err)
			}
			u, i, d, err := DecodePutChunkArg(generic)
			if err != nil || u != uuid || i != 9 || !bytes.Equal(d, data) {
				t.Fatalf("DecodePutChunkArg(agent-go's) = %q, %d, %d bytes, %v", u, i, len(d), err)
			}
		})
	}
	t.Run("other type table order falls back to the generic decoder", func(t *testing.T) {
		// The same values with the blob written as an inline `vec nat8` type table entry at a
		// different index: (vec nat8 at index 1, after an unused record type).
		arg := []byte{'D', 'I', 'D', 'L', 0x02, 0x6c, 0x00, 0x6d, 0x7b, 0x03, 0x71, 0x79, 0x01}
		arg = append(arg, 0x01, 'x', 2, 0, 0, 0, 0x02, 7, 8)
		u, i, d, err := DecodePutChunkArg(arg)
		if err != nil || u != "x" || i != 2 || !bytes.Equal(d, []byte{7, 8}) {
			t.Fatalf("DecodePutChunkArg = %q, %d, %v, %v", u, i, d, err)
		}
	})
	t.Run("garbage is an error", func(t *testing.T) {
		if _, _, _, err := DecodePutChunkArg(append(bytes.Clone(putChunkHeader), 0xff)); err == nil {
			t.Fatal("decoded garbage")
		}
	})
}

func TestValidUUID(t *testing.T) {
	for s, want := range map[string]bool{
		"123e4567-e89b-12d3-a456-426614174000":   true,
		"00000000-0000-0000-0000-000000000000":   true,
		"123E4567-e89b-12d3-a456-426614174000":   false,
		"123e4567-e89b-12d3-a456-4266141740000":  false,
		"123e4567-e89b-12d3-a456_426614174000":   false,
		"123e4567e-89b-12d3-a456-426614174000":   false,
		"urn:uuid:123e4567-e89b-12d3-a456-42661": false,
	} {
		if got := ValidUUID(s); got != want {
			t.Errorf("ValidUUID(%q) = %v; want %v", s, got, want)
		}
	}
}
