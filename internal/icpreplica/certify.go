package icpreplica

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"slices"
	"time"

	"github.com/aviate-labs/agent-go/certification"
	"github.com/aviate-labs/agent-go/certification/bls"
	"github.com/aviate-labs/agent-go/certification/hashtree"
	"github.com/aviate-labs/agent-go/leb128"
	"github.com/aviate-labs/agent-go/principal"
	bls12381 "github.com/consensys/gnark-crypto/ecc/bls12-381"
	"github.com/consensys/gnark-crypto/ecc/bls12-381/fr"
	"github.com/fxamacker/cbor/v2"
)

// selfDescribe is the CBOR self-describe tag 55799 a replica puts in front of its replies.
var selfDescribe = []byte{0xd9, 0xd9, 0xf7}

// nnsSubnet is where agent-go looks up node keys when a certificate carries no delegation, so the
// double, which signs with the root key directly, files its node there (ICP-NOTES pitfall 2).
var nnsSubnet = principal.MustDecode(certification.RootSubnetID)

// keys are the double's signing keys. They survive Restart, and a state file, because clients
// fetch the root key once, at start-up.
type keys struct {
	root    *bls.SecretKey
	foreign *bls.SecretKey // signs instead of root while the foreign-key switch is on
	node    ed25519.PrivateKey
	rootDER []byte
	nodeDER []byte
	nodeID  principal.Principal
	// subnetID is the double's own subnet: a subnet without a delegation (the NNS, a local
	// replica's system subnet) has the self-authenticating id of its root key, which is where
	// the JavaScript agent looks for node keys and canister ranges.
	subnetID principal.Principal
}

func newKeys() (*keys, error) {
	var rootSeed, foreignSeed [fr.Bytes]byte
	if _, err := rand.Read(rootSeed[:]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(foreignSeed[:]); err != nil {
		return nil, err
	}
	_, node, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return keysFrom(rootSeed[:], foreignSeed[:], node.Seed())
}

// keysFrom rebuilds the keys from their secret bytes (see snapshot).
func keysFrom(rootSecret, foreignSecret, nodeSeed []byte) (*keys, error) {
	if len(nodeSeed) != ed25519.SeedSize {
		return nil, fmt.Errorf("node key seed: %d bytes, want %d", len(nodeSeed), ed25519.SeedSize)
	}
	k := &keys{
		root:    blsSecret(rootSecret),
		foreign: blsSecret(foreignSecret),
		node:    ed25519.NewKeyFromSeed(nodeSeed),
	}
	// agent-go's bls package has no byte encoding; its key types are gnark-crypto's underneath.
	pk := (*bls12381.G2Affine)(k.root.PublicKey()).Bytes()
	der, err := certification.PublicBLSKeyToDER(pk[:])
	if err != nil {
		return nil, err
	}
	k.rootDER = der
	k.nodeDER = ed25519DER(k.node.Public().(ed25519.PublicKey))
	k.nodeID = principal.NewSelfAuthenticating(k.nodeDER)
	k.subnetID = principal.NewSelfAuthenticating(k.rootDER)
	return k, nil
}

func blsSecret(b []byte) *bls.SecretKey {
	var e fr.Element
	e.SetBytes(b)
	return (*bls.SecretKey)(&e)
}

func blsSecretBytes(sk *bls.SecretKey) []byte {
	b := (*fr.Element)(sk).Bytes()
	return b[:]
}

// ed25519DER is the SubjectPublicKeyInfo of an Ed25519 key (RFC 8410), as the IC expects it.
func ed25519DER(pub ed25519.PublicKey) []byte {
	prefix := []byte{0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00}
	return append(prefix, pub...)
}

// tree is a hash tree under construction: each value is a leaf ([]byte) or a subtree (tree).
type tree map[string]any

// node builds the hash tree with the labels of every fork sorted, as lookups binary-search.
func (t tree) node() hashtree.Node {
	labels := make([]string, 0, len(t))
	for l := range t {
		labels = append(labels, l)
	}
	slices.Sort(labels) // byte order, as the spec requires
	nodes := make([]hashtree.Node, len(labels))
	for i, l := range labels {
		var child hashtree.Node
		switch v := t[l].(type) {
		case []byte:
			child = hashtree.Leaf(v)
		case tree:
			child = v.node()
		}
		// A label with spare capacity would be appended to in place by Labeled.Reconstruct.
		nodes[i] = hashtree.Labeled{Label: slices.Clip([]byte(l)), Tree: child}
	}
	return forks(nodes)
}

func forks(nodes []hashtree.Node) hashtree.Node {
	switch len(nodes) {
	case 0:
		return hashtree.Empty{}
	case 1:
		return nodes[0]
	}
	mid := len(nodes) / 2
	return hashtree.Fork{LeftTree: forks(nodes[:mid]), RightTree: forks(nodes[mid:])}
}

// certify signs t, with the current time added, and returns the certificate's CBOR.
func (k *keys) certify(t tree, foreign bool) ([]byte, error) {
	t["time"] = leb128.AppendUnsignedUint64(nil, uint64(time.Now().UnixNano()))
	root := t.node()
	digest := root.Reconstruct()
	sk := k.root
	if foreign {
		sk = k.foreign
	}
	sig, err := sk.Sign(append(hashtree.DomainSeparator("ic-state-root"), digest[:]...))
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	sigBytes := (*bls12381.G1Affine)(sig).Bytes()
	serialized, err := hashtree.Serialize(root)
	if err != nil {
		return nil, err
	}
	return encode(map[string]any{
		"tree":      cbor.RawMessage(serialized),
		"signature": sigBytes[:],
	})
}

// subnetTree is the subnet part of the state tree: the subnet's key, the canister ranges it
// hosts and its node's key. It is filed under two ids: the subnet's own (subnetID), where the
// JavaScript agent looks and checks that the canister is in canister_ranges before it trusts a
// node key, and the NNS subnet id that agent-go v0.9.2 hard-codes (ICP-NOTES pitfall 2).
func (k *keys) subnetTree(canister principal.Principal) (tree, error) {
	// canister_ranges is CBOR: an array of [first, last] canister id pairs, inclusive.
	ranges, err := cbor.Marshal([][][]byte{{canister.Raw, canister.Raw}})
	if err != nil {
		return nil, fmt.Errorf("encode canister ranges: %w", err)
	}
	subnet := tree{
		"public_key":      k.rootDER,
		"canister_ranges": ranges,
		"node":            tree{string(k.nodeID.Raw): tree{"public_key": k.nodeDER}},
	}
	return tree{string(k.subnetID.Raw): subnet, string(nnsSubnet.Raw): subnet}, nil
}

// encode writes v as CBOR with the self-describe tag.
func encode(v any) ([]byte, error) {
	b, err := cbor.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(bytes.Clone(selfDescribe), b...), nil
}

// signQueryReply builds a query response signed by the node key over the representation-
// independent hash of its fields, as agent-go checks it.
func (k *keys) signQueryReply(id [32]byte, reply []byte, rej *reject, now time.Time) (map[string]any, error) {
	ts := uint64(now.UnixNano())
	var resp map[string]any
	var fields []certification.KeyValuePair
	if rej != nil {
		resp = map[string]any{"status": "rejected", "reject_code": rej.code,
			"reject_message": rej.message, "error_code": rej.errorCode}
		fields = []certification.KeyValuePair{
			{Key: "status", Value: "rejected"},
			{Key: "reject_code", Value: rej.code},
			{Key: "reject_message", Value: rej.message},
			{Key: "error_code", Value: rej.errorCode},
		}
	} else {
		resp = map[string]any{"status": "replied", "reply": map[string]any{"arg": reply}}
		fields = []certification.KeyValuePair{
			{Key: "status", Value: "replied"},
			{Key: "reply", Value: map[string]any{"arg": reply}},
		}
	}
	fields = append(fields,
		certification.KeyValuePair{Key: "timestamp", Value: ts},
		certification.KeyValuePair{Key: "request_id", Value: id[:]})
	h, err := certification.RepresentationIndependentHash(fields)
	if err != nil {
		return nil, fmt.Errorf("hash query reply: %w", err)
	}
	sig := ed25519.Sign(k.node, append(hashtree.DomainSeparator("ic-response"), h[:]...))
	resp["signatures"] = []any{map[string]any{
		"timestamp": ts,
		"signature": sig,
		"identity":  k.nodeID.Raw,
	}}
	return resp, nil
}
