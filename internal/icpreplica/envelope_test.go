package icpreplica

import (
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go"
	"github.com/aviate-labs/agent-go/certification/hashtree"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
)

// signed builds an envelope the way agent-go does and returns it with agent-go's request id.
func signed(t *testing.T, id identity.Identity, req agent.Request) ([]byte, agent.RequestID) {
	t.Helper()
	req.Sender = id.Sender()
	rid := agent.NewRequestID(req)
	sig, err := rid.Sign(id)
	if err != nil {
		t.Fatal(err)
	}
	b, err := cbor.Marshal(agent.Envelope{Content: req, SenderPubKey: id.PublicKey(), SenderSig: sig})
	if err != nil {
		t.Fatal(err)
	}
	return b, rid
}

func TestDecodeRequest(t *testing.T) {
	now := time.Now()
	expiry := uint64(now.Add(time.Minute).UnixNano())
	ed, _ := identity.NewRandomEd25519Identity()
	k1, _ := identity.NewRandomSecp256k1Identity()
	p256, _ := identity.NewRandomPrime256v1Identity()
	call := agent.Request{Type: agent.RequestTypeCall, CanisterID: principal.MustDecode(DefaultCanisterID),
		MethodName: "status", Arguments: []byte("DIDL\x00\x00"), IngressExpiry: expiry, Nonce: []byte("0123456789")}
	readState := agent.Request{Type: agent.RequestTypeReadState, IngressExpiry: expiry,
		Paths: [][]hashtree.Label{{hashtree.Label("request_status"), make([]byte, 32)}, {hashtree.Label("time")}}}

	for name, id := range map[string]identity.Identity{
		"anonymous": new(identity.AnonymousIdentity), "ed25519": ed, "secp256k1": k1, "p256": p256,
	} {
		for _, req := range []agent.Request{call, readState} {
			t.Run(name+" "+req.Type, func(t *testing.T) {
				body, rid := signed(t, id, req)
				got, err := decodeRequest(body, now)
				if err != nil {
					t.Fatalf("decodeRequest: %v", err)
				}
				if got.id != rid {
					t.Fatalf("request id %x; agent-go computes %x", got.id, rid)
				}
			})
		}
	}

	t.Run("tampered signature", func(t *testing.T) {
		req := call
		req.Sender = ed.Sender()
		rid := agent.NewRequestID(req)
		sig, _ := rid.Sign(ed)
		sig[0] ^= 1
		body, _ := cbor.Marshal(agent.Envelope{Content: req, SenderPubKey: ed.PublicKey(), SenderSig: sig})
		if _, err := decodeRequest(body, now); err == nil || !strings.Contains(err.Error(), "Invalid signature") {
			t.Fatalf("decodeRequest = %v; want Invalid signature", err)
		}
	})
	t.Run("sender is not the key's principal", func(t *testing.T) {
		req := call
		req.Sender = k1.Sender()
		rid := agent.NewRequestID(req)
		sig, _ := rid.Sign(ed)
		body, _ := cbor.Marshal(agent.Envelope{Content: req, SenderPubKey: ed.PublicKey(), SenderSig: sig})
		if _, err := decodeRequest(body, now); err == nil || !strings.Contains(err.Error(), "not the principal") {
			t.Fatalf("decodeRequest = %v; want a sender mismatch", err)
		}
	})
	t.Run("signed sender without a signature", func(t *testing.T) {
		req := call
		req.Sender = ed.Sender()
		body, _ := cbor.Marshal(agent.Envelope{Content: req})
		if _, err := decodeRequest(body, now); err == nil || !strings.Contains(err.Error(), "missing sender_pubkey") {
			t.Fatalf("decodeRequest = %v; want missing signature", err)
		}
	})
	for name, exp := range map[string]time.Time{
		"expired":        now.Add(-time.Minute),
		"too far ahead":  now.Add(10 * time.Minute),
		"just past 5m30": now.Add(5*time.Minute + 31*time.Second),
	} {
		t.Run(name, func(t *testing.T) {
			req := call
			req.IngressExpiry = uint64(exp.UnixNano())
			body, _ := signed(t, ed, req)
			if _, err := decodeRequest(body, now); err == nil || !strings.Contains(err.Error(), "ingress_expiry") {
				t.Fatalf("decodeRequest = %v; want an expiry error", err)
			}
		})
	}
}
