package icpreplica_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go"
	"github.com/aviate-labs/agent-go/certification"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/fxamacker/cbor/v2"

	"github.com/edgesync/edgesync/icp"
	"github.com/edgesync/edgesync/internal/icpreplica"
)

const uuid = "123e4567-e89b-12d3-a456-426614174000"

func newAgent(t *testing.T, r *icpreplica.Replica, cfg agent.Config) *agent.Agent {
	t.Helper()
	u, _ := url.Parse(r.URL())
	cfg.FetchRootKey = true
	cfg.ClientConfig = append(cfg.ClientConfig, agent.WithHostURL(u))
	cfg.PollDelay = 10 * time.Millisecond
	cfg.PollTimeout = 5 * time.Second
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatalf("agent: %v", err)
	}
	return a
}

func putMetadata(a *agent.Agent, r *icpreplica.Replica, id string) (icp.Result[icp.Artifact], error) {
	var res icp.Result[icp.Artifact]
	err := a.Call(r.CanisterID(), icp.MethodPutMetadata, []any{id, []byte(`{"k":"v"}`)}, []any{&res})
	return res, err
}

func status(a *agent.Agent, r *icpreplica.Replica, id string) (icp.Result[icp.Status], error) {
	var res icp.Result[icp.Status]
	err := a.Query(r.CanisterID(), icp.MethodStatus, []any{id}, []any{&res})
	return res, err
}

func TestReplica_status(t *testing.T) {
	r := icpreplica.StartTest(t, icpreplica.Config{})
	resp, err := http.Get(r.URL() + "/api/v2/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		RootKey []byte `cbor:"root_key"`
	}
	body, _ := io.ReadAll(resp.Body)
	if err := cbor.Unmarshal(body, &st); err != nil {
		t.Fatalf("decode status: %v", err)
	}
	if !bytes.Equal(st.RootKey, r.RootKey()) {
		t.Fatal("status root_key differs from RootKey()")
	}
	if _, err := certification.PublicBLSKeyFromDER(st.RootKey); err != nil {
		t.Fatalf("root key is not a BLS DER key: %v", err)
	}
}

// TestReplica_agentGo runs agent-go against the double the ways it can talk: identities, sync and
// polled calls, the legacy API, verified queries.
func TestReplica_agentGo(t *testing.T) {
	r := icpreplica.StartTest(t, icpreplica.Config{})
	ed, _ := identity.NewRandomEd25519Identity()
	k1, _ := identity.NewRandomSecp256k1Identity()
	p256, _ := identity.NewRandomPrime256v1Identity()
	ids := map[string]identity.Identity{"anonymous": nil, "ed25519": ed, "secp256k1": k1, "p256": p256}
	for name, id := range ids {
		for _, legacy := range []bool{false, true} {
			t.Run(name+map[bool]string{false: "", true: " legacy"}[legacy], func(t *testing.T) {
				cfg := agent.Config{Identity: id}
				if legacy {
					cfg.ClientConfig = []agent.ClientOption{agent.WithLegacyAPI()}
				}
				a := newAgent(t, r, cfg)
				memory := nextUUID()
				res, err := putMetadata(a, r, memory)
				if err != nil || res.Ok == nil {
					t.Fatalf("put_metadata = %+v, %v", res, err)
				}
				st, err := status(a, r, memory)
				if err != nil || st.Ok == nil || st.Ok.Metadata == nil {
					t.Fatalf("status = %+v, %v", st, err)
				}
			})
		}
	}
	t.Run("polled", func(t *testing.T) {
		r.SetAsync(true)
		defer r.SetAsync(false)
		res, err := putMetadata(newAgent(t, r, agent.Config{}), r, nextUUID())
		if err != nil || res.Ok == nil {
			t.Fatalf("put_metadata polled = %+v, %v", res, err)
		}
	})
}

var uuids atomic.Uint64

// nextUUID returns a canonical UUID not used before in this test binary.
func nextUUID() string {
	n := uuids.Add(1)
	return fmt.Sprintf("%08x-0000-4000-8000-%012x", n, n)
}

func TestReplica_rejects(t *testing.T) {
	r := icpreplica.StartTest(t, icpreplica.Config{})
	a := newAgent(t, r, agent.Config{})
	var out []byte
	if err := a.Call(r.CanisterID(), "nope", []any{}, []any{&out}); err == nil || !strings.Contains(err.Error(), "IC0536") {
		t.Errorf("unknown update method = %v; want IC0536", err)
	}
	var res icp.Result[icp.Artifact]
	err := a.Query(r.CanisterID(), icp.MethodPutMetadata, []any{uuid, []byte{}}, []any{&res})
	if err == nil || !strings.Contains(err.Error(), "no query method") {
		t.Errorf("update method as a query = %v; want a reject", err)
	}
	if err := a.Call(r.CanisterID(), icp.MethodStatus, []any{uint64(1)}, []any{&res}); err == nil || !strings.Contains(err.Error(), "trap") {
		t.Errorf("wrong argument types = %v; want a trap", err)
	}
}

func TestReplica_ingressExpiryTooFar(t *testing.T) {
	r := icpreplica.StartTest(t, icpreplica.Config{})
	a := newAgent(t, r, agent.Config{IngressExpiry: 10 * time.Minute})
	if _, err := putMetadata(a, r, uuid); err == nil || !strings.Contains(err.Error(), "(400)") {
		t.Fatalf("put_metadata with a 10-minute expiry = %v; want 400", err)
	}
}

// TestReplica_foreignKey: agent-go itself refuses foreign-key certificates on queries and on
// polled calls (the synchronous call path is icp's transport's job, tested there).
func TestReplica_foreignKey(t *testing.T) {
	r := icpreplica.StartTest(t, icpreplica.Config{})
	a := newAgent(t, r, agent.Config{})
	r.SetForeignKey(true)
	if _, err := status(a, r, uuid); err == nil || !strings.Contains(err.Error(), "signature verification failed") {
		t.Errorf("query = %v; want signature verification failed", err)
	}
	r.SetAsync(true)
	if _, err := putMetadata(a, r, uuid); err == nil || !strings.Contains(err.Error(), "signature verification failed") {
		t.Errorf("polled call = %v; want signature verification failed", err)
	}
}

// TestReplica_replay: the same envelope twice is executed once; both get the outcome.
func TestReplica_replay(t *testing.T) {
	r := icpreplica.StartTest(t, icpreplica.Config{})
	a := newAgent(t, r, agent.Config{})
	req, err := a.CreateCandidAPIRequest(agent.RequestTypeCall, r.CanisterID(), icp.MethodPutMetadata, uuid, []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		var res icp.Result[icp.Artifact]
		if err := req.CallAndWait([]any{&res}); err != nil || res.Ok == nil {
			t.Fatalf("call = %+v, %v; want Ok both times", res, err)
		}
	}
	if n := r.Stats().Calls[icp.MethodPutMetadata]; n != 1 {
		t.Fatalf("executed %d times; want 1", n)
	}
}

func TestReplica_failRate(t *testing.T) {
	r := icpreplica.StartTest(t, icpreplica.Config{FailRate: 1})
	a := newAgent(t, r, agent.Config{}) // the status fetch never fails
	if _, err := putMetadata(a, r, uuid); err == nil || !strings.Contains(err.Error(), "(503)") {
		t.Fatalf("put_metadata = %v; want 503", err)
	}
	r.SetFailRate(0)
	if _, err := putMetadata(a, r, uuid); err != nil {
		t.Fatal(err)
	}
}

func TestReplica_oversizedBody(t *testing.T) {
	r := icpreplica.StartTest(t, icpreplica.Config{})
	resp, err := http.Post(r.URL()+"/api/v4/canister/"+r.CanisterID().String()+"/call", "application/cbor",
		bytes.NewReader(make([]byte, 6<<20)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("6 MiB body: HTTP %d; want 413", resp.StatusCode)
	}
}

func TestReplica_stateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state")
	first := icpreplica.StartTest(t, icpreplica.Config{})
	if _, err := putMetadata(newAgent(t, first, agent.Config{}), first, uuid); err != nil {
		t.Fatal(err)
	}
	if err := first.SaveFile(path); err != nil {
		t.Fatal(err)
	}
	second, err := icpreplica.New(icpreplica.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := second.LoadFile(path); err != nil {
		t.Fatal(err)
	}
	if err := second.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Stop() })
	if !bytes.Equal(first.RootKey(), second.RootKey()) {
		t.Fatal("the root key did not survive the state file")
	}
	st, err := status(newAgent(t, second, agent.Config{}), second, uuid)
	if err != nil || st.Ok == nil || st.Ok.Metadata == nil {
		t.Fatalf("status after loading = %+v, %v; want the metadata", st, err)
	}
	if err := second.LoadFile(filepath.Join(t.TempDir(), "absent")); err != nil {
		t.Fatalf("a missing state file: %v; want a fresh start", err)
	}
}

func TestReplica_restartKeepsAddress(t *testing.T) {
	r := icpreplica.StartTest(t, icpreplica.Config{})
	before := r.URL()
	if err := r.Restart(true); err != nil {
		t.Fatal(err)
	}
	if r.URL() != before {
		t.Fatalf("restarted on %s; want %s", r.URL(), before)
	}
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}
