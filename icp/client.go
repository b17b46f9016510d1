package icp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/aviate-labs/agent-go"
	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"go.uber.org/zap"

	"github.com/edgesync/edgesync/domain"
)

// ChunkSize is the largest chunk a put_chunk message carries. A replica refuses ingress messages
// over 2 MiB (2,097,152 bytes) counting the whole signed envelope; put_chunk's envelope adds about
// 400 bytes with a secp256k1 identity (measured by TestChunkSize_FitsIngressLimit), so 1 KiB of
// headroom keeps every full chunk under the limit.
const ChunkSize = 2<<20 - 1<<10

// MaxAssetSize is the largest asset the memory-store canister stores (64 MiB); begin_asset
// refuses larger ones with InvalidArgument.
const MaxAssetSize = domain.MaxAssetBytes

// Default settings.
const (
	DefaultCallTimeout = time.Minute
	DefaultParallelism = 4
	DefaultPollDelay   = 250 * time.Millisecond
	ingressExpiry      = 5 * time.Minute
)

// Config configures a Client.
type Config struct {
	// URL is the replica or boundary node, e.g. https://icp-api.io or http://127.0.0.1:4943.
	URL string
	// CanisterID is the memory-store canister's principal text.
	CanisterID string
	// IdentityFile is a PEM private key, Ed25519 (PKCS#8 "PRIVATE KEY") or secp256k1
	// ("EC PRIVATE KEY", as dfx writes it). Empty means the anonymous identity.
	IdentityFile string
	// FetchRootKey trusts the root key the replica reports at startup. Only for a local replica or
	// the double: on mainnet it would let whoever answers choose the key; false uses the IC's key.
	FetchRootKey bool
	// CallTimeout bounds one canister call, polling included. Default DefaultCallTimeout.
	CallTimeout time.Duration
	// ChunkSize is the upload chunk size, at most ChunkSize (the default).
	ChunkSize int
	// Parallelism is how many put_chunk calls UploadAsset keeps in flight. Default DefaultParallelism:
	// an update call waits for consensus (seconds on mainnet), so one at a time wastes the link.
	Parallelism int
	// PollDelay is the pause between status polls when a replica answers a call with 202.
	PollDelay time.Duration
}

// Client talks to the memory-store canister. It is safe for concurrent use.
type Client struct {
	agent       *agent.Agent
	canister    principal.Principal
	callTimeout time.Duration
	chunkSize   int
	parallelism int
	log         *zap.Logger
}

// New builds a Client. It contacts the replica only when cfg.FetchRootKey is set.
func New(cfg Config, logger *zap.Logger) (*Client, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("icp url %q: want an absolute URL such as http://127.0.0.1:4943", cfg.URL)
	}
	canister, err := principal.Decode(cfg.CanisterID)
	if err != nil {
		return nil, fmt.Errorf("icp canister id %q: %w", cfg.CanisterID, err)
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = ChunkSize
	}
	if cfg.ChunkSize < 1 || cfg.ChunkSize > ChunkSize {
		return nil, fmt.Errorf("icp chunk size %d: want 1..%d", cfg.ChunkSize, ChunkSize)
	}
	if cfg.Parallelism <= 0 {
		cfg.Parallelism = DefaultParallelism
	}
	if cfg.PollDelay <= 0 {
		cfg.PollDelay = DefaultPollDelay
	}
	id, err := LoadIdentity(cfg.IdentityFile)
	if err != nil {
		return nil, err
	}
	transport := &VerifyingTransport{Base: http.DefaultTransport, MaxAge: ingressExpiry}
	a, err := agent.New(agent.Config{
		Identity:      id,
		IngressExpiry: ingressExpiry,
		ClientConfig: []agent.ClientOption{
			agent.WithHostURL(u),
			// The timeout also bounds the root-key fetch inside agent.New, which takes no context.
			agent.WithHttpClient(&http.Client{Transport: transport, Timeout: cfg.CallTimeout}),
		},
		FetchRootKey: cfg.FetchRootKey,
		PollDelay:    cfg.PollDelay,
		PollTimeout:  cfg.CallTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("icp agent for %s: %w", cfg.URL, err)
	}
	transport.SetRootKey(a.GetRootKey())
	return &Client{
		agent:       a,
		canister:    canister,
		callTimeout: cfg.CallTimeout,
		chunkSize:   cfg.ChunkSize,
		parallelism: cfg.Parallelism,
		log: logger.With(zap.String("component", "icp"),
			zap.Stringer("canister", canister), zap.Stringer("sender", id.Sender())),
	}, nil
}

// LoadIdentity reads a PEM identity file: Ed25519 (PKCS#8) or secp256k1 (SEC1, with or without
// an EC PARAMETERS block). An empty path means the anonymous identity.
func LoadIdentity(path string) (identity.Identity, error) {
	if path == "" {
		return new(identity.AnonymousIdentity), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("icp identity file: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("icp identity file %s: no PEM block; want an Ed25519 or secp256k1 private key", path)
	}
	var id identity.Identity
	switch block.Type {
	case "PRIVATE KEY":
		id, err = identity.NewEd25519IdentityFromPEM(data)
	case "EC PARAMETERS":
		id, err = identity.NewSecp256k1IdentityFromPEM(data)
	case "EC PRIVATE KEY":
		id, err = identity.NewSecp256k1IdentityFromPEMWithoutParameters(data)
	default:
		err = fmt.Errorf("PEM block %q", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("icp identity file %s: %w (want an Ed25519 or secp256k1 private key)", path, err)
	}
	return id, nil
}

// Sender returns the principal the client signs as.
func (c *Client) Sender() principal.Principal { return c.agent.Sender() }

// PutMetadata stores the metadata document of a memory and returns its content hash (lowercase hex
// SHA-256 of json). Storing the same bytes again succeeds; different bytes for a stored UUID fail
// with an *AlreadyExistsError carrying the stored hash.
func (c *Client) PutMetadata(ctx context.Context, uuid string, json []byte) (string, error) {
	if !ValidUUID(uuid) {
		return "", fmt.Errorf("put metadata: %w: %q", ErrInvalidUUID, uuid)
	}
	sum := sha256.Sum256(json)
	hash := hex.EncodeToString(sum[:])
	var res Result[Artifact]
	if err := c.call(ctx, MethodPutMetadata, []any{uuid, json}, &res); err != nil {
		return "", err
	}
	stored, err := unwrap(res)
	if err != nil {
		if err := sameContent(err, hash); err != nil {
			return "", fmt.Errorf("put metadata %s: %w", uuid, err)
		}
		return hash, nil
	}
	if stored.ContentHash != hash {
		return "", fmt.Errorf("put metadata %s: canister stored hash %s, sent %s", uuid, stored.ContentHash, hash)
	}
	return hash, nil
}

// BeginAsset starts or resumes the upload of an asset of size bytes whose SHA-256 is sha256Hex
// (lowercase hex). The returned Upload lists the chunks the canister already holds. If the asset is
// already stored the error is an *AlreadyExistsError, whatever its hash: compare it to yours.
func (c *Client) BeginAsset(ctx context.Context, uuid string, size int64, sha256Hex string) (Upload, error) {
	if err := checkAsset(uuid, size, sha256Hex); err != nil {
		return Upload{}, fmt.Errorf("begin asset: %w", err)
	}
	var res Result[Upload]
	args := []any{uuid, uint64(size), sha256Hex, uint32(c.chunkSize)}
	if err := c.call(ctx, MethodBeginAsset, args, &res); err != nil {
		return Upload{}, err
	}
	up, err := unwrap(res)
	if err != nil {
		return Upload{}, fmt.Errorf("begin asset %s: %w", uuid, err)
	}
	return up, nil
}

// PutChunk sends chunk index of the unfinished upload and returns how many chunks the canister
// now holds. Sending a chunk twice is harmless.
func (c *Client) PutChunk(ctx context.Context, uuid string, index uint32, data []byte) (uint32, error) {
	if !ValidUUID(uuid) {
		return 0, fmt.Errorf("put chunk: %w: %q", ErrInvalidUUID, uuid)
	}
	ctx, cancel := context.WithTimeout(ctx, c.callTimeout)
	defer cancel()
	// The chunk goes out as a raw request with a hand-encoded argument: see EncodePutChunkArg.
	req, err := c.agent.CreateRawAPIRequest(agent.RequestTypeCall, c.canister, MethodPutChunk,
		EncodePutChunkArg(uuid, index, data))
	if err != nil {
		return 0, fmt.Errorf("put_chunk: %w", err)
	}
	var raw []byte
	if err := req.CallAndWaitWithContext(ctx, &raw); err != nil {
		return 0, fmt.Errorf("put_chunk: %w", err)
	}
	var res Result[uint32]
	if err := candid.Unmarshal(raw, []any{&res}); err != nil {
		return 0, fmt.Errorf("put_chunk: decode reply: %w", err)
	}
	held, err := unwrap(res)
	if err != nil {
		return 0, fmt.Errorf("put chunk %s/%d: %w", uuid, index, err)
	}
	return held, nil
}

// CommitAsset assembles the uploaded chunks; the canister verifies the SHA-256 declared at
// BeginAsset (*HashMismatchError otherwise, and the upload is discarded).
func (c *Client) CommitAsset(ctx context.Context, uuid string) (Artifact, error) {
	if !ValidUUID(uuid) {
		return Artifact{}, fmt.Errorf("commit asset: %w: %q", ErrInvalidUUID, uuid)
	}
	var res Result[Artifact]
	if err := c.call(ctx, MethodCommitAsset, []any{uuid}, &res); err != nil {
		return Artifact{}, err
	}
	a, err := unwrap(res)
	if err != nil {
		return Artifact{}, fmt.Errorf("commit asset %s: %w", uuid, err)
	}
	return a, nil
}

// Status reports what the canister holds for uuid, through a verified query.
func (c *Client) Status(ctx context.Context, uuid string) (Status, error) {
	if !ValidUUID(uuid) {
		return Status{}, fmt.Errorf("status: %w: %q", ErrInvalidUUID, uuid)
	}
	ctx, cancel := context.WithTimeout(ctx, c.callTimeout)
	defer cancel()
	var res Result[Status]
	if err := c.agent.QueryWithContext(ctx, c.canister, MethodStatus, []any{uuid}, []any{&res}); err != nil {
		return Status{}, fmt.Errorf("status: %w", err)
	}
	st, err := unwrap(res)
	if err != nil {
		return Status{}, fmt.Errorf("status %s: %w", uuid, err)
	}
	return st, nil
}

func (c *Client) call(ctx context.Context, method string, args []any, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.callTimeout)
	defer cancel()
	if err := c.agent.CallWithContext(ctx, c.canister, method, args, []any{out}); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	return nil
}

// sameContent turns AlreadyExists with the hash we sent into success: the write already happened.
func sameContent(err error, hash string) error {
	var exists *AlreadyExistsError
	if errors.As(err, &exists) && exists.ContentHash == hash {
		return nil
	}
	return err
}

func checkAsset(uuid string, size int64, sha256Hex string) error {
	switch {
	case !ValidUUID(uuid):
		return fmt.Errorf("%w: %q", ErrInvalidUUID, uuid)
	case size < 0:
		return fmt.Errorf("%w: negative size %d", ErrInvalidArgument, size)
	case !ValidHash(sha256Hex):
		return fmt.Errorf("%w: sha256 %q is not 64 lowercase hex digits", ErrInvalidArgument, sha256Hex)
	}
	return nil
}
