package icpreplica

import (
	"path/filepath"
	"testing"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/candid/idl"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/edgesync/edgesync/icp"
)

var (
	alice = principal.Principal{Raw: []byte{0xc0, 0x0a}}
	bob   = principal.Principal{Raw: []byte{0xc0, 0x0b}}
)

func call[T any](t *testing.T, s *memoryStore, caller principal.Principal, method string, args ...any) T {
	t.Helper()
	arg, err := candid.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	reply, rej := s.execute(caller, method, arg)
	if rej != nil {
		t.Fatalf("%s rejected: %s", method, rej.message)
	}
	var out T
	if err := candid.Unmarshal(reply, []any{&out}); err != nil {
		t.Fatalf("%s reply: %v", method, err)
	}
	return out
}

// TestAccess_openByDefault: a double started without controllers or writers lets anyone write,
// so the tests and tools that predate the writer list keep working, and nobody can change it.
func TestAccess_openByDefault(t *testing.T) {
	s := newMemoryStore(defaultLimits(0), nil)
	if r := call[icp.Result[icp.Artifact]](t, s, principal.AnonymousID, icp.MethodPutMetadata, testUUID, []byte("{}")); r.Ok == nil {
		t.Fatalf("anonymous put_metadata on an open double = %+v; want Ok", r.Err)
	}
	if r := call[icp.Result[idl.Null]](t, s, alice, methodAuthorize, bob); r.Err == nil || r.Err.Unauthorized == nil {
		t.Fatalf("authorize on an open double = %+v; want Unauthorized", r)
	}
}

// TestAccess_writerListSurvivesStateFile: the writer list is canister state, so a state file
// keeps it, as an upgrade keeps it on the canister.
func TestAccess_writerListSurvivesStateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state")
	cfg := Config{Controllers: []principal.Principal{alice}}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, store, _ := r.state()
	if res := call[icp.Result[icp.Artifact]](t, store, bob, icp.MethodPutMetadata, testUUID, []byte("{}")); res.Err == nil || res.Err.Unauthorized == nil || *res.Err.Unauthorized != bob.String() {
		t.Fatalf("put_metadata before authorize = %+v; want Unauthorized %s", res, bob)
	}
	if res := call[icp.Result[idl.Null]](t, store, alice, methodAuthorize, bob); res.Ok == nil {
		t.Fatalf("authorize by the controller = %+v", res.Err)
	}
	if err := r.SaveFile(path); err != nil {
		t.Fatal(err)
	}
	again, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := again.LoadFile(path); err != nil {
		t.Fatal(err)
	}
	_, store, _ = again.state()
	if ws := call[[]principal.Principal](t, store, alice, methodWriters); len(ws) != 1 || !ws[0].Equal(bob) {
		t.Fatalf("writers after loading the state file = %v; want [%s]", ws, bob)
	}
	if res := call[icp.Result[icp.Artifact]](t, store, bob, icp.MethodPutMetadata, testUUID, []byte("{}")); res.Ok == nil {
		t.Fatalf("put_metadata by the restored writer = %+v; want Ok", res.Err)
	}
	// A restart that wipes the state goes back to the configured list.
	if err := again.Restart(false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = again.Stop() })
	_, store, _ = again.state()
	if ws := call[[]principal.Principal](t, store, alice, methodWriters); len(ws) != 0 {
		t.Fatalf("writers after a wiping restart = %v; want none", ws)
	}
}
