package icpreplica

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/aviate-labs/agent-go/certification"
	"github.com/aviate-labs/agent-go/principal"
	secp256k1 "github.com/consensys/gnark-crypto/ecc/secp256k1/ecdsa"
	"github.com/fxamacker/cbor/v2"
)

// Ingress expiry bounds of a replica: at most 5 minutes ahead, plus 30 seconds of clock drift.
const (
	maxIngressTTL   = 5 * time.Minute
	permittedDrift  = 30 * time.Second
	requestDomain   = "\x0Aic-request"
	anonymousSender = 0x04
)

// request is a decoded, authenticated envelope.
type request struct {
	id      [32]byte
	content content
	size    int // the whole envelope, which the ingress limit counts
}

type envelope struct {
	Content          cbor.RawMessage `cbor:"content"`
	SenderPubKey     []byte          `cbor:"sender_pubkey"`
	SenderSig        []byte          `cbor:"sender_sig"`
	SenderDelegation cbor.RawMessage `cbor:"sender_delegation"`
}

type content struct {
	RequestType   string     `cbor:"request_type"`
	CanisterID    []byte     `cbor:"canister_id"`
	MethodName    string     `cbor:"method_name"`
	Arg           []byte     `cbor:"arg"`
	Sender        []byte     `cbor:"sender"`
	IngressExpiry uint64     `cbor:"ingress_expiry"`
	Nonce         []byte     `cbor:"nonce"`
	Paths         [][][]byte `cbor:"paths"`
}

// badRequest is an error the replica answers with HTTP 400 and its text.
type badRequest struct{ msg string }

func (e badRequest) Error() string { return e.msg }

func badRequestf(format string, args ...any) error {
	return badRequest{fmt.Sprintf(format, args...)}
}

// decodeRequest decodes an envelope, computes its request id and authenticates the sender.
func decodeRequest(body []byte, now time.Time) (*request, error) {
	var env envelope
	if err := cbor.Unmarshal(body, &env); err != nil {
		return nil, badRequestf("Could not parse body as read request: %v", err)
	}
	if len(env.SenderDelegation) > 0 && !bytes.Equal(env.SenderDelegation, []byte{0xf6}) {
		return nil, badRequestf("Invalid delegation: sender delegations are not supported by icp-replica")
	}
	var c content
	if err := cbor.Unmarshal(env.Content, &c); err != nil {
		return nil, badRequestf("Could not parse request content: %v", err)
	}
	// The request id is computed from the generic map, independently of how agent-go builds it,
	// so a disagreement shows up as a signature failure instead of being agreed on silently.
	var generic map[string]any
	if err := cbor.Unmarshal(env.Content, &generic); err != nil {
		return nil, badRequestf("Could not parse request content: %v", err)
	}
	id, err := certification.HashAny(generic)
	if err != nil {
		return nil, badRequestf("Could not compute request id: %v", err)
	}
	if err := checkExpiry(c.IngressExpiry, now); err != nil {
		return nil, err
	}
	if err := authenticate(c.Sender, env.SenderPubKey, env.SenderSig, id); err != nil {
		return nil, err
	}
	return &request{id: id, content: c, size: len(body)}, nil
}

func checkExpiry(expiry uint64, now time.Time) error {
	lo := now.Add(-permittedDrift)
	hi := now.Add(maxIngressTTL + permittedDrift)
	if expiry < uint64(lo.UnixNano()) || expiry > uint64(hi.UnixNano()) {
		return badRequestf("Invalid request expiry: Specified ingress_expiry not within expected range: "+
			"Minimum allowed expiry: %s, Maximum allowed expiry: %s, Provided expiry: %s",
			lo.UTC().Format(time.RFC3339Nano), hi.UTC().Format(time.RFC3339Nano),
			time.Unix(0, int64(expiry)).UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// authenticate checks that the sender is anonymous without a key, or is the self-authenticating
// principal of the key that signed the request id.
func authenticate(sender, pubKey, sig []byte, id [32]byte) error {
	if bytes.Equal(sender, []byte{anonymousSender}) {
		if len(pubKey) != 0 || len(sig) != 0 {
			return badRequestf("Invalid signature: the anonymous sender must not carry a key or signature")
		}
		return nil
	}
	if len(pubKey) == 0 || len(sig) == 0 {
		return badRequestf("Invalid signature: missing sender_pubkey or sender_sig for sender %s",
			principal.Principal{Raw: sender})
	}
	if want := principal.NewSelfAuthenticating(pubKey); !bytes.Equal(want.Raw, sender) {
		return badRequestf("Invalid signature: sender %s is not the principal of the public key (%s)",
			principal.Principal{Raw: sender}, want)
	}
	msg := append([]byte(requestDomain), id[:]...)
	if err := verifySignature(pubKey, msg, sig); err != nil {
		return badRequestf("Invalid signature: %v", err)
	}
	return nil
}

var (
	oidEd25519   = asn1.ObjectIdentifier{1, 3, 101, 112}
	oidECPublic  = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidSecp256k1 = asn1.ObjectIdentifier{1, 3, 132, 0, 10}
	oidP256      = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
)

// verifySignature checks sig over msg with a DER public key: Ed25519, or ECDSA over SHA-256 with
// secp256k1 or P-256 and a 64-byte r||s signature, the schemes the IC accepts from agents.
func verifySignature(der, msg, sig []byte) error {
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return fmt.Errorf("parse public key: %w", err)
	}
	key := spki.PublicKey.Bytes
	switch alg := spki.Algorithm.Algorithm; {
	case alg.Equal(oidEd25519):
		if len(key) != ed25519.PublicKeySize || !ed25519.Verify(key, msg, sig) {
			return errors.New("Ed25519 signature verification failed")
		}
		return nil
	case alg.Equal(oidECPublic):
		var curve asn1.ObjectIdentifier
		if _, err := asn1.Unmarshal(spki.Algorithm.Parameters.FullBytes, &curve); err != nil {
			return fmt.Errorf("parse curve: %w", err)
		}
		if len(key) != 65 || key[0] != 0x04 || len(sig) != 64 {
			return errors.New("want an uncompressed EC point and a 64-byte signature")
		}
		switch {
		case curve.Equal(oidSecp256k1):
			var pk secp256k1.PublicKey
			if _, err := pk.SetBytes(key[1:]); err != nil {
				return fmt.Errorf("secp256k1 key: %w", err)
			}
			if ok, err := pk.Verify(sig, msg, sha256.New()); err != nil || !ok {
				return errors.New("secp256k1 signature verification failed")
			}
			return nil
		case curve.Equal(oidP256):
			x, y := new(big.Int).SetBytes(key[1:33]), new(big.Int).SetBytes(key[33:])
			pk := &ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}
			digest := sha256.Sum256(msg)
			r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
			if !ecdsa.Verify(pk, digest[:], r, s) {
				return errors.New("P-256 signature verification failed")
			}
			return nil
		default:
			return fmt.Errorf("unsupported curve %v", curve)
		}
	default:
		return fmt.Errorf("unsupported key algorithm %v", alg)
	}
}
