package icp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aviate-labs/agent-go/certification"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
)

// ErrUncertified is returned when a synchronous call reply's certificate does not verify.
var ErrUncertified = errors.New("call reply certificate not verified")

// maxReplyBytes bounds what the transport buffers of a call reply; certificates are a few KiB.
const maxReplyBytes = 4 << 20

// VerifyingTransport verifies the certificate of every synchronous 200 reply to
// POST /api/v{3,4}/canister/{id}/call before agent-go reads it: signature against the root key
// (through a delegation when present, which also checks the canister range) and freshness. agent-go
// v0.9.2 reads the reply out of that certificate without checking either, so without this a
// man-in-the-middle or a misconfigured boundary could forge update results. Other requests pass
// through untouched: agent-go verifies read_state and query replies itself.
type VerifyingTransport struct {
	// Base sends the requests; http.DefaultTransport when nil.
	Base http.RoundTripper
	// MaxAge is how old a certificate may be (agent-go's ingress expiry, 5 minutes by default).
	MaxAge time.Duration

	rootKey atomic.Pointer[[]byte]
}

// SetRootKey sets the DER root key certificates must chain to. Until it is set, every call reply
// is refused: the agent fetches the key (when asked to) only after the transport exists.
func (t *VerifyingTransport) SetRootKey(der []byte) {
	k := bytes.Clone(der)
	t.rootKey.Store(&k)
}

// RoundTrip implements http.RoundTripper.
func (t *VerifyingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK || req.Method != http.MethodPost {
		return resp, err
	}
	ecid, ok := callCanister(req.URL.Path)
	if !ok {
		return resp, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes+1))
	_ = resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("read call reply: %w", err)
	}
	if len(body) > maxReplyBytes {
		return nil, fmt.Errorf("%w: reply larger than %d bytes", ErrUncertified, maxReplyBytes)
	}
	if err := t.verify(ecid, body); err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

func (t *VerifyingTransport) verify(ecid principal.Principal, body []byte) error {
	var reply struct {
		Status      string `cbor:"status"`
		Certificate []byte `cbor:"certificate"`
	}
	if err := cbor.Unmarshal(body, &reply); err != nil {
		return fmt.Errorf("%w: decode reply: %v", ErrUncertified, err)
	}
	if reply.Status != "replied" {
		// A non-replicated rejection carries no certificate and no result to forge.
		return nil
	}
	rootKey := t.rootKey.Load()
	if rootKey == nil {
		return fmt.Errorf("%w: no root key set", ErrUncertified)
	}
	var cert certification.Certificate
	if err := cbor.Unmarshal(reply.Certificate, &cert); err != nil {
		return fmt.Errorf("%w: decode certificate: %v", ErrUncertified, err)
	}
	maxAge := t.MaxAge
	if maxAge == 0 {
		maxAge = 5 * time.Minute
	}
	if err := cert.VerifyTime(maxAge); err != nil {
		return fmt.Errorf("%w: %v", ErrUncertified, err)
	}
	if err := certification.VerifyCertificate(cert, ecid, *rootKey); err != nil {
		return fmt.Errorf("%w: %v", ErrUncertified, err)
	}
	return nil
}

// callCanister returns the effective canister id of a synchronous call path,
// /api/v3/canister/{id}/call or /api/v4/canister/{id}/call.
func callCanister(path string) (principal.Principal, bool) {
	// The host URL may carry a path prefix, so look for the API part anywhere.
	i := strings.Index(path, "/api/v4/canister/")
	if i < 0 {
		if i = strings.Index(path, "/api/v3/canister/"); i < 0 {
			return principal.Principal{}, false
		}
	}
	id, ok := strings.CutSuffix(path[i+len("/api/v4/canister/"):], "/call")
	if !ok || strings.Contains(id, "/") {
		return principal.Principal{}, false
	}
	p, err := principal.Decode(id)
	if err != nil {
		return principal.Principal{}, false
	}
	return p, true
}
