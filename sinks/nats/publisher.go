package nats

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/domain"
)

// StreamConfig describes the stream of CONTRACT section 5.
type StreamConfig struct {
	Name          string
	SubjectPrefix string
	// Duplicates is the dedupe window (at least 2 minutes).
	Duplicates time.Duration
	MaxAge     time.Duration
	Replicas   int
	// MaxBytes limits the stream's size; 0 is unlimited.
	MaxBytes int64
	// Notify, when set, hears every change EnsureStream makes to an
	// existing stream (an existing stream is never changed silently).
	Notify func(msg string)
}

// Subjects are the captured subjects for a prefix; admin.> is request-reply
// on core NATS and not captured.
func Subjects(prefix string) []string { return domain.Subjects{Prefix: prefix}.Stream() }

// EnsureStream creates the stream when it does not exist. An existing stream
// is left as its operator configured it (replicas, limits, dedupe window),
// except that subjects none of its own cover are added and per-message TTLs
// are allowed (both reported through Notify): upload progress is published
// with a Nats-TTL header, which a stream without AllowMsgTTL rejects. A
// stream the daemon cannot work with (CheckStream's fatal findings: a short
// dedupe window, the admin subject captured, memory storage, ...) and
// subjects another stream holds are ErrStreamUnusable with the fix.
func EnsureStream(ctx context.Context, js jetstream.JetStream, c StreamConfig) (jetstream.Stream, error) {
	if c.Duplicates < 2*time.Minute {
		c.Duplicates = 5 * time.Minute
	}
	if c.MaxAge == 0 {
		c.MaxAge = 7 * 24 * time.Hour
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = -1
	}
	s, err := js.Stream(ctx, c.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        c.Name,
			Description: "edgesync change events",
			Subjects:    Subjects(c.SubjectPrefix),
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    c.Replicas,
			MaxAge:      c.MaxAge,
			MaxBytes:    c.MaxBytes,
			Duplicates:  c.Duplicates,
			Discard:     jetstream.DiscardOld,
			AllowMsgTTL: true, // upload progress expires on its own (ProgressTTL)
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = js.Stream(ctx, c.Name) // another instance created it meanwhile
		}
		if err != nil {
			err = explainOverlap(ctx, js, c.Name, Subjects(c.SubjectPrefix), err)
		}
	}
	if err != nil {
		if errors.Is(err, ErrStreamUnusable) {
			return nil, err
		}
		return nil, fmt.Errorf("stream %s: %w", c.Name, err)
	}
	cfg := s.CachedInfo().Config
	if err := checkExisting(cfg, c.SubjectPrefix); err != nil {
		return nil, err
	}
	if missing := MissingSubjects(cfg.Subjects, c.SubjectPrefix); len(missing) > 0 {
		cfg.Subjects = append(cfg.Subjects, missing...)
		if s, err = js.UpdateStream(ctx, cfg); err != nil {
			if err = explainOverlap(ctx, js, c.Name, missing, err); errors.Is(err, ErrStreamUnusable) {
				return nil, err
			}
			return nil, fmt.Errorf("add edgesync's subjects %s to stream %s: %w", strings.Join(missing, ", "), c.Name, err)
		}
		if c.Notify != nil {
			c.Notify(fmt.Sprintf("added the subjects %s to stream %s (it lacked them)", strings.Join(missing, ", "), c.Name))
		}
		cfg = s.CachedInfo().Config
	}
	if !cfg.AllowMsgTTL {
		s = allowMsgTTL(ctx, js, s, c)
	}
	return s, nil
}

// allowMsgTTL turns on per-message TTLs of an existing stream (JetStream
// allows turning them on, never off). It never fails EnsureStream: only
// upload progress depends on it, and change events must not wait for it.
// When it cannot, Notify says what is lost and how to fix it.
func allowMsgTTL(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, c StreamConfig) jetstream.Stream {
	notify := func(format string, args ...any) {
		if c.Notify != nil {
			c.Notify(fmt.Sprintf(format, args...))
		}
	}
	cfg := s.CachedInfo().Config
	cfg.AllowMsgTTL = true
	updated, err := js.UpdateStream(ctx, cfg)
	switch {
	case err != nil:
		notify("stream %s does not allow per-message TTLs and enabling them failed (%v): upload progress (%s) is not stored in the stream until you run `nats stream edit %s --allow-msg-ttl` (NATS 2.11 or later)",
			c.Name, err, domain.Subjects{Prefix: c.SubjectPrefix}.SyncProgress(), c.Name)
		return s
	case !updated.CachedInfo().Config.AllowMsgTTL:
		notify("stream %s: the NATS server ignores per-message TTLs (it is older than 2.11), so upload progress stays for the stream's MaxAge; upgrade NATS", c.Name)
	default:
		notify("allowed per-message TTLs on stream %s, so upload progress expires after %s (as `nats stream edit %s --allow-msg-ttl`; it cannot be turned off again)", c.Name, ProgressTTL, c.Name)
	}
	return updated
}

// ProgressTTL is how long an upload-progress message stays in the stream
// (its Nats-TTL header). Progress is published up to four times a second per
// upload and is stale within seconds; the change events keep the stream's
// MaxAge. Ten minutes lets a consumer that was briefly away still see how
// far an upload got.
const ProgressTTL = 10 * time.Minute

// ProgressMessage builds an upload-progress message: JSON, no msg id (a
// lost or repeated progress message costs nothing), and a Nats-TTL header
// so the stream drops it after ttl (ProgressTTL when ttl is 0; JetStream
// counts whole seconds, at least one).
func ProgressMessage(subject string, data []byte, ttl time.Duration) *natsgo.Msg {
	if ttl <= 0 {
		ttl = ProgressTTL
	}
	m := &natsgo.Msg{Subject: subject, Data: data, Header: make(natsgo.Header, 2)}
	m.Header["Content-Type"] = []string{"application/json"}
	m.Header[jetstream.MsgTTLHeader] = []string{ttl.String()}
	return m
}

// Config of a Publisher and of the JetStream context it publishes on.
type Config struct {
	// MaxPending bounds the messages in flight (the memory window).
	MaxPending int
	// AckTimeout fails a publish that has no ack in time.
	AckTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.MaxPending <= 0 {
		c.MaxPending = 4096
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 10 * time.Second
	}
	return c
}

// NewJetStream is the process's one JetStream context: the pipeline's
// asynchronous publisher and every low-rate publisher (gallery status,
// reconcile reports, slot events) share it.
func NewJetStream(nc *natsgo.Conn, cfg Config) (jetstream.JetStream, error) {
	cfg = cfg.withDefaults()
	return jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout))
}

// Publisher publishes events asynchronously, reports acks in order and
// keeps the events of one key (a memory) in order even when a publish fails:
// at most one event per key is unacknowledged, the next waits (without
// holding up other keys) until the previous is stored. So a failed publish
// never leaves a later event of the same memory stored before it: the
// session fails, nothing after it for that memory was sent, and the replay
// sends both in order.
type Publisher struct {
	js     jetstream.JetStream
	budget *cdc.Budget

	mu     sync.Mutex
	fifo   []*outgoing // sent, in publish order, awaiting their acks
	wake   chan struct{}
	chains map[string][]*outgoing // per key: the unacked head's followers
	// stored are message ids the stream already holds (StoredFrom):
	// publishing them again is skipped, whatever the duplicate window.
	stored  map[string]struct{}
	skipped int
}

type outgoing struct {
	key   string
	m     *natsgo.Msg
	pend  *cdc.Pending
	bytes int64
	f     jetstream.PubAckFuture
}

// ErrPublish wraps every publish failure.
var ErrPublish = errors.New("publish")

// NewPublisher returns a publisher on js (from NewJetStream, whose
// MaxPending bounds the messages in flight). budget, when not nil, bounds
// the bytes of events published or queued and not yet acknowledged.
func NewPublisher(js jetstream.JetStream, budget *cdc.Budget) *Publisher {
	return &Publisher{js: js, budget: budget, wake: make(chan struct{}, 1), chains: map[string][]*outgoing{}}
}

// Message builds a JSON message with its id headers.
func Message(subject, id string, data []byte) *natsgo.Msg {
	m := &natsgo.Msg{Subject: subject, Data: data, Header: make(natsgo.Header, 2)}
	m.Header[jetstream.MsgIDHeader] = []string{id}
	m.Header["Content-Type"] = []string{"application/json"}
	return m
}

// Publish sends one message for pend's transaction (pend may be nil for
// messages outside the confirm rule). key orders the messages of one memory
// ("" : no order kept). It blocks while the byte budget or the JetStream
// window is full.
func (p *Publisher) Publish(ctx context.Context, key string, m *natsgo.Msg, pend *cdc.Pending) error {
	if len(p.stored) > 0 {
		id := m.Header.Get(jetstream.MsgIDHeader)
		if _, ok := p.stored[id]; ok {
			delete(p.stored, id) // stored before a crash or outage: durable already
			p.skipped++
			return nil
		}
	}
	o := &outgoing{key: key, m: m, pend: pend, bytes: int64(len(m.Data)) + 256}
	if err := p.budget.Acquire(ctx, o.bytes); err != nil {
		return err
	}
	if pend != nil {
		pend.Add(1)
	}
	if key != "" {
		p.mu.Lock()
		if followers, busy := p.chains[key]; busy {
			p.chains[key] = append(followers, o)
			p.mu.Unlock()
			return nil
		}
		p.chains[key] = nil
		p.mu.Unlock()
	}
	return p.send(ctx, o)
}

// Skip makes Publish drop the messages whose ids are in stored (from
// StoredFrom): they are durable already. Call it before the first Publish.
func (p *Publisher) Skip(stored map[string]struct{}) { p.stored = stored }

// Skipped is how many messages Publish dropped because the stream held them.
func (p *Publisher) Skipped() int { return p.skipped }

func (p *Publisher) send(ctx context.Context, o *outgoing) error {
	for {
		f, err := p.js.PublishMsgAsync(o.m)
		if err == nil {
			o.f = f
			p.mu.Lock()
			p.fifo = append(p.fifo, o)
			p.mu.Unlock()
			select {
			case p.wake <- struct{}{}:
			default:
			}
			return nil
		}
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			return fmt.Errorf("%w %s: %w", ErrPublish, o.m.Subject, err)
		}
		select { // the window is full: wait for acks, then try again
		case <-p.js.PublishAsyncComplete():
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (p *Publisher) head(ctx context.Context) (*outgoing, error) {
	for {
		p.mu.Lock()
		if len(p.fifo) > 0 {
			o := p.fifo[0]
			p.fifo[0] = nil
			p.fifo = p.fifo[1:]
			p.mu.Unlock()
			return o, nil
		}
		p.mu.Unlock()
		select {
		case <-p.wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// acked completes o and sends the next event of its key, if one waits.
func (p *Publisher) acked(ctx context.Context, o *outgoing) error {
	if o.pend != nil {
		o.pend.Done(1)
	}
	p.budget.Release(o.bytes)
	if o.key == "" {
		return nil
	}
	p.mu.Lock()
	followers := p.chains[o.key]
	if len(followers) == 0 {
		delete(p.chains, o.key)
		p.mu.Unlock()
		return nil
	}
	next := followers[0]
	if len(followers) == 1 {
		p.chains[o.key] = nil
	} else {
		p.chains[o.key] = followers[1:]
	}
	p.mu.Unlock()
	return p.send(ctx, next)
}

// Run reports acks until ctx ends; the first failed publish ends it with an
// error (the pipeline then replays from the confirmed LSN).
func (p *Publisher) Run(ctx context.Context) error {
	for {
		o, err := p.head(ctx)
		if err != nil {
			return err
		}
		select {
		case <-o.f.Ok():
			if err := p.acked(ctx, o); err != nil {
				return err
			}
		case err := <-o.f.Err():
			return fmt.Errorf("%w %s (msg id %s): %w", ErrPublish, o.m.Subject, o.m.Header.Get(jetstream.MsgIDHeader), err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// PublishSync publishes one message and waits for its ack (for low-rate
// events outside the pipeline: gallery status, reconcile reports).
func PublishSync(ctx context.Context, js jetstream.JetStream, subject, id string, data []byte) error {
	m := Message(subject, id, data)
	if id == "" {
		delete(m.Header, jetstream.MsgIDHeader)
	}
	if _, err := js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("%w %s: %w", ErrPublish, subject, err)
	}
	return nil
}
