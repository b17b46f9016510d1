package icpreplica

import (
	"bytes"
	"testing"

	"github.com/aviate-labs/agent-go/certification/hashtree"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
)

// TestKeys_subnetTree: the node key and the canister ranges are where both agents look, under
// the subnet's own id (the JavaScript agent) and the NNS id (agent-go), and the ranges hold the
// hosted canister.
func TestKeys_subnetTree(t *testing.T) {
	k, err := newKeys()
	if err != nil {
		t.Fatal(err)
	}
	canister := principal.MustDecode(DefaultCanisterID)
	st, err := k.subnetTree(canister)
	if err != nil {
		t.Fatal(err)
	}
	root := tree{"subnet": st}.node()
	if !k.subnetID.Equal(principal.NewSelfAuthenticating(k.rootDER)) {
		t.Fatalf("subnet id %s is not the self-authenticating id of the root key", k.subnetID)
	}
	for name, id := range map[string]principal.Principal{"own": k.subnetID, "NNS": nnsSubnet} {
		raw, err := hashtree.Lookup(root, hashtree.Label("subnet"), hashtree.Label(id.Raw), hashtree.Label("canister_ranges"))
		if err != nil {
			t.Fatalf("%s subnet id: canister_ranges: %v", name, err)
		}
		var ranges [][][]byte
		if err := cbor.Unmarshal(raw, &ranges); err != nil {
			t.Fatalf("%s subnet id: canister_ranges is not CBOR ranges: %v", name, err)
		}
		if len(ranges) != 1 || len(ranges[0]) != 2 || !bytes.Equal(ranges[0][0], canister.Raw) || !bytes.Equal(ranges[0][1], canister.Raw) {
			t.Fatalf("%s subnet id: canister_ranges = %x; want [[%x %x]]", name, ranges, canister.Raw, canister.Raw)
		}
		key, err := hashtree.Lookup(root, hashtree.Label("subnet"), hashtree.Label(id.Raw), hashtree.Label("node"), hashtree.Label(k.nodeID.Raw), hashtree.Label("public_key"))
		if err != nil || !bytes.Equal(key, k.nodeDER) {
			t.Fatalf("%s subnet id: node public_key = %x, %v", name, key, err)
		}
	}
}
