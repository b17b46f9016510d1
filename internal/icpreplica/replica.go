package icpreplica

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"go.uber.org/zap"
)

const (
	// MaxIngressBytes is an application subnet's max_ingress_bytes_per_message: the whole signed
	// envelope of a call counts.
	MaxIngressBytes = 2 << 20
	// DefaultCanisterID is the id dfx gives the first canister of a local replica.
	DefaultCanisterID = "bkyz2-fmaaa-aaaaa-qaaaq-cai"
	// maxBodyBytes caps what the HTTP layer reads before the envelope is even decoded.
	maxBodyBytes = 5 << 20
	// requestRetention is how long call outcomes stay readable: past any valid ingress expiry.
	requestRetention = maxIngressTTL + 2*permittedDrift
)

// Config configures a Replica. The switches (latency, failure rate, async, foreign key) can also be
// flipped while it runs.
type Config struct {
	// Addr is the listen address; 127.0.0.1 on a free port when empty.
	Addr string
	// CanisterID is the memory-store canister's principal; DefaultCanisterID when empty.
	CanisterID string
	// Latency is added before every request is handled.
	Latency time.Duration
	// FailRate is the fraction (0..1) of POST requests answered 503 without being processed.
	// GET /api/v2/status never fails: clients fetch the root key from it once, at start.
	FailRate float64
	// Async answers /api/v3 and /api/v4 calls with 202, so clients poll read_state, as a replica
	// does when it cannot answer in time. /api/v2 calls always get 202.
	Async bool
	// MaxIngressBytes overrides the ingress message limit; MaxIngressBytes when 0.
	MaxIngressBytes int
	// MaxAssetSize bounds one asset; DefaultMaxAssetSize when 0.
	MaxAssetSize uint64
	// Controllers may call authorize and deauthorize; Writers start on the writer list. With
	// neither, the double keeps its open default: anyone may write (see access).
	Controllers, Writers []principal.Principal
	// Logger receives one debug line per request; none when nil.
	Logger *zap.Logger
}

// Replica is a running replica double. Its methods are safe for concurrent use.
type Replica struct {
	canister   principal.Principal
	maxIngress int
	// controllers and writers rebuild the writer list when Restart wipes the state.
	controllers, writers []principal.Principal
	log                  *zap.Logger

	latency  atomic.Int64  // time.Duration
	failRate atomic.Uint64 // math.Float64bits
	async    atomic.Bool
	foreign  atomic.Bool

	statsMu sync.Mutex
	stats   Stats

	mu       sync.Mutex // guards keys, store, requests swaps and the server fields below
	keys     *keys
	store    *memoryStore
	requests *requestLog
	addr     string
	srv      *http.Server
	done     chan struct{} // closed when srv's Serve returns
}

// New builds a replica without listening: call Listen, or serve Handler yourself.
func New(cfg Config) (*Replica, error) {
	id := cfg.CanisterID
	if id == "" {
		id = DefaultCanisterID
	}
	canister, err := principal.Decode(id)
	if err != nil {
		return nil, fmt.Errorf("canister id %q: %w", id, err)
	}
	if !(cfg.FailRate >= 0 && cfg.FailRate <= 1) { // also refuses NaN
		return nil, fmt.Errorf("fail rate %v: want 0..1", cfg.FailRate)
	}
	k, err := newKeys()
	if err != nil {
		return nil, fmt.Errorf("generate keys: %w", err)
	}
	r := &Replica{
		canister:    canister,
		maxIngress:  cfg.MaxIngressBytes,
		controllers: cfg.Controllers,
		writers:     cfg.Writers,
		log:         cfg.Logger,
		keys:        k,
		store:       newMemoryStore(defaultLimits(cfg.MaxAssetSize), newAccess(cfg.Controllers, cfg.Writers)),
		requests:    newRequestLog(),
		addr:        cfg.Addr,
	}
	if r.maxIngress == 0 {
		r.maxIngress = MaxIngressBytes
	}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	if r.addr == "" {
		r.addr = "127.0.0.1:0"
	}
	r.SetLatency(cfg.Latency)
	r.SetFailRate(cfg.FailRate)
	r.SetAsync(cfg.Async)
	return r, nil
}

// Start builds a replica and starts serving on cfg.Addr.
func Start(cfg Config) (*Replica, error) {
	r, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if err := r.Listen(); err != nil {
		return nil, err
	}
	return r, nil
}

// Listen binds the configured address (remembering the port it got, so Restart comes back on
// it) and serves in the background. It does nothing if the replica already serves.
func (r *Replica) Listen() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", r.addr, err)
	}
	r.addr = ln.Addr().String()
	srv := &http.Server{Handler: r.Handler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // returns http.ErrServerClosed after Stop
	}()
	r.srv, r.done = srv, done
	return nil
}

// URL is the replica's base URL, e.g. http://127.0.0.1:4943.
func (r *Replica) URL() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return "http://" + r.addr
}

// Addr is the address the replica listens on.
func (r *Replica) Addr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.addr
}

// CanisterID is the principal of the hosted memory-store canister.
func (r *Replica) CanisterID() principal.Principal { return r.canister }

// RootKey is the DER root key certificates are signed with, as /api/v2/status reports it.
func (r *Replica) RootKey() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.keys.rootDER)
}

// SetLatency sets the delay added before each request is handled.
func (r *Replica) SetLatency(d time.Duration) { r.latency.Store(int64(d)) }

// SetFailRate sets the fraction (0..1) of POST requests answered 503.
func (r *Replica) SetFailRate(f float64) { r.failRate.Store(math.Float64bits(f)) }

// SetAsync makes v3/v4 calls answer 202 (clients then poll) instead of a certificate.
func (r *Replica) SetAsync(on bool) { r.async.Store(on) }

// SetForeignKey makes the replica sign certificates with a key other than its root key, as an
// impostor would: clients that verify must refuse every certified reply.
func (r *Replica) SetForeignKey(on bool) { r.foreign.Store(on) }

// Stop closes the listener and every open connection; requests in flight fail. It is idempotent,
// and the state stays for Restart.
func (r *Replica) Stop() error {
	r.mu.Lock()
	srv, done := r.srv, r.done
	r.srv, r.done = nil, nil
	r.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Close()
	<-done
	return err
}

// Restart stops the replica if it runs and serves again on the same address, with the same keys.
// keepState false wipes the canister and the record of past calls, as a reinstall would.
func (r *Replica) Restart(keepState bool) error {
	if err := r.Stop(); err != nil {
		return err
	}
	if !keepState {
		r.mu.Lock()
		r.store = newMemoryStore(r.store.limits, newAccess(r.controllers, r.writers))
		r.requests = newRequestLog()
		r.mu.Unlock()
	}
	return r.Listen()
}

// Stats counts what the replica executed, so tests can tell what a client really sent.
type Stats struct {
	// Calls counts executed update calls by method; replays of a request id are not counted.
	Calls map[string]int
	// LargestCall is the size in bytes of the largest call envelope accepted.
	LargestCall int
}

// Stats returns a copy of the counters.
func (r *Replica) Stats() Stats {
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	calls := make(map[string]int, len(r.stats.Calls))
	for m, n := range r.stats.Calls {
		calls[m] = n
	}
	return Stats{Calls: calls, LargestCall: r.stats.LargestCall}
}

func (r *Replica) count(rq *request) {
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	if r.stats.Calls == nil {
		r.stats.Calls = map[string]int{}
	}
	r.stats.Calls[rq.content.MethodName]++
	r.stats.LargestCall = max(r.stats.LargestCall, rq.size)
}

func (r *Replica) state() (*keys, *memoryStore, *requestLog) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.keys, r.store, r.requests
}

// Handler serves the IC HTTP interface.
func (r *Replica) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v2/status", r.handleStatus)
	mux.HandleFunc("POST /api/{version}/canister/{id}/call", r.handleCall)
	mux.HandleFunc("POST /api/{version}/canister/{id}/query", r.handleQuery)
	mux.HandleFunc("POST /api/{version}/canister/{id}/read_state", r.handleReadState)
	mux.HandleFunc("POST /api/{version}/subnet/{id}/read_state", r.handleReadState)
	return r.inject(mux)
}

// inject applies the latency and failure switches in front of every handler.
func (r *Replica) inject(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if d := time.Duration(r.latency.Load()); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-req.Context().Done():
				t.Stop()
				return
			}
		}
		if req.Method == http.MethodPost {
			if f := math.Float64frombits(r.failRate.Load()); f > 0 && rand.Float64() < f {
				http.Error(w, "icp-replica: injected failure (fail rate)", http.StatusServiceUnavailable)
				return
			}
		}
		r.log.Debug("request", zap.String("method", req.Method), zap.String("path", req.URL.Path))
		next.ServeHTTP(w, req)
	})
}

func (r *Replica) handleStatus(w http.ResponseWriter, _ *http.Request) {
	k, _, _ := r.state()
	writeCBOR(w, http.StatusOK, map[string]any{
		"ic_api_version":        "0.18.0",
		"impl_source":           "https://github.com/edgesync/edgesync/internal/icpreplica",
		"impl_version":          "icp-replica",
		"replica_health_status": "healthy",
		"root_key":              k.rootDER,
	})
}

// readRequest reads, decodes and authenticates an envelope, and checks it targets this canister
// with the request type the endpoint serves. It answers the error itself and returns nil then.
func (r *Replica) readRequest(w http.ResponseWriter, req *http.Request, wantType string) *request {
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, fmt.Sprintf("Request body is larger than the max allowed %d bytes.", maxBodyBytes),
				http.StatusRequestEntityTooLarge)
			return nil
		}
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return nil
	}
	rq, err := decodeRequest(body, time.Now())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return nil
	}
	if rq.content.RequestType != wantType {
		http.Error(w, fmt.Sprintf("Unexpected request type %q on the %s endpoint", rq.content.RequestType, wantType),
			http.StatusBadRequest)
		return nil
	}
	if strings.Contains(req.URL.Path, "/subnet/") {
		return rq
	}
	ecid, err := principal.Decode(req.PathValue("id"))
	if err != nil {
		http.Error(w, fmt.Sprintf("Invalid effective canister id %q: %v", req.PathValue("id"), err), http.StatusBadRequest)
		return nil
	}
	if !ecid.Equal(r.canister) {
		http.Error(w, fmt.Sprintf("Canister %s not found: icp-replica hosts only %s", ecid, r.canister), http.StatusBadRequest)
		return nil
	}
	if wantType != "read_state" && !bytes.Equal(rq.content.CanisterID, r.canister.Raw) {
		http.Error(w, fmt.Sprintf("Specified CanisterId %s does not match effective canister id in URL %s",
			principal.Principal{Raw: rq.content.CanisterID}, ecid), http.StatusBadRequest)
		return nil
	}
	return rq
}

func (r *Replica) handleCall(w http.ResponseWriter, req *http.Request) {
	version := req.PathValue("version")
	if version != "v2" && version != "v3" && version != "v4" {
		http.NotFound(w, req)
		return
	}
	rq := r.readRequest(w, req, "call")
	if rq == nil {
		return
	}
	if rq.size > r.maxIngress {
		// The replica's own wording (http_endpoints, call handler).
		http.Error(w, fmt.Sprintf("Request 0x%x is too large. Message byte size %d is larger than the max allowed %d.",
			rq.id, rq.size, r.maxIngress), http.StatusRequestEntityTooLarge)
		return
	}
	k, store, requests := r.state()
	out := requests.get(rq.id)
	if out == nil {
		// A replay of the same request id is answered from the record, never executed twice.
		reply, rej := store.execute(principal.Principal{Raw: rq.content.Sender}, rq.content.MethodName, rq.content.Arg)
		out = requests.put(rq.id, reply, rej)
		r.count(rq)
	}
	if version == "v2" || r.async.Load() {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	cert, err := k.certify(tree{"request_status": tree{string(rq.id[:]): out.tree()}}, r.foreign.Load())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeCBOR(w, http.StatusOK, map[string]any{"status": "replied", "certificate": cert})
}

func (r *Replica) handleReadState(w http.ResponseWriter, req *http.Request) {
	rq := r.readRequest(w, req, "read_state")
	if rq == nil {
		return
	}
	k, _, requests := r.state()
	t := tree{}
	for _, path := range rq.content.Paths {
		if len(path) == 0 {
			continue
		}
		switch string(path[0]) {
		case "time": // every certificate has it
		case "subnet":
			st, err := k.subnetTree(r.canister)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			t["subnet"] = st
		case "request_status":
			if len(path) < 2 || len(path[1]) != 32 {
				http.Error(w, "Invalid request_status path", http.StatusBadRequest)
				return
			}
			// Unknown ids stay absent: the caller keeps polling, as against a replica.
			if out := requests.get([32]byte(path[1])); out != nil {
				st, _ := t["request_status"].(tree)
				if st == nil {
					st = tree{}
					t["request_status"] = st
				}
				st[string(path[1])] = out.tree()
			}
		default:
			http.Error(w, fmt.Sprintf("Path %q is not served by icp-replica", path[0]), http.StatusForbidden)
			return
		}
	}
	cert, err := k.certify(t, r.foreign.Load())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeCBOR(w, http.StatusOK, map[string]any{"certificate": cert})
}

func (r *Replica) handleQuery(w http.ResponseWriter, req *http.Request) {
	rq := r.readRequest(w, req, "query")
	if rq == nil {
		return
	}
	k, store, _ := r.state()
	var (
		reply []byte
		rej   *reject
	)
	if isQuery(rq.content.MethodName) {
		reply, rej = store.execute(principal.Principal{Raw: rq.content.Sender}, rq.content.MethodName, rq.content.Arg)
	} else {
		rej = &reject{rejectDestinationInvalid,
			fmt.Sprintf("Canister has no query method '%s'", rq.content.MethodName), "IC0536"}
	}
	resp, err := k.signQueryReply(rq.id, reply, rej, time.Now())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeCBOR(w, http.StatusOK, resp)
}

func writeCBOR(w http.ResponseWriter, status int, v any) {
	b, err := encode(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/cbor")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
