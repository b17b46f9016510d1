package nats

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/cdc"
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
func Subjects(prefix string) []string {
	return []string{prefix + ".memory.>", prefix + ".edge.>", prefix + ".gallery.>", prefix + ".sync.>", prefix + ".reconcile.>"}
}

// EnsureStream creates the stream when it does not exist. An existing stream
// is left as its operator configured it (replicas, limits, dedupe window),
// except that subjects none of its own cover are added (and reported through
// Notify). A stream the daemon cannot work with (CheckStream's fatal
// findings: a short dedupe window, the admin subject captured, memory
// storage, ...) and subjects another stream holds are ErrStreamUnusable
// with the fix.
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
	}
	return s, nil
}

// Config of a Publisher.
type Config struct {
	// MaxPending bounds the messages in flight (the memory window).
	MaxPending int
	// AckTimeout fails a publish that has no ack in time.
	AckTimeout time.Duration
}

type inflight struct {
	f jetstream.PubAckFuture
	p *cdc.Pending
}

// Publisher publishes events asynchronously and reports acks in order.
type Publisher struct {
	js   jetstream.JetStream
	acks chan inflight
}

// ErrPublish wraps every publish failure.
var ErrPublish = errors.New("publish")

// NewPublisher returns a publisher on nc.
func NewPublisher(nc *natsgo.Conn, cfg Config) (*Publisher, error) {
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 4096
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 10 * time.Second
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout))
	if err != nil {
		return nil, err
	}
	return &Publisher{js: js, acks: make(chan inflight, cfg.MaxPending)}, nil
}

// JetStream is the underlying context.
func (p *Publisher) JetStream() jetstream.JetStream { return p.js }

// Message builds a JSON message with its id headers.
func Message(subject, id string, data []byte) *natsgo.Msg {
	m := &natsgo.Msg{Subject: subject, Data: data, Header: make(natsgo.Header, 2)}
	m.Header[jetstream.MsgIDHeader] = []string{id}
	m.Header["Content-Type"] = []string{"application/json"}
	return m
}

// Publish sends one message for pend's transaction (pend may be nil for
// messages outside the confirm rule). It blocks while MaxPending messages are
// in flight.
func (p *Publisher) Publish(ctx context.Context, m *natsgo.Msg, pend *cdc.Pending) error {
	if pend != nil {
		pend.Add(1)
	}
	for {
		f, err := p.js.PublishMsgAsync(m)
		if err == nil {
			select {
			case p.acks <- inflight{f: f, p: pend}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			return fmt.Errorf("%w %s: %w", ErrPublish, m.Subject, err)
		}
		select { // the window is full: wait for acks, then try again
		case <-p.js.PublishAsyncComplete():
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Run reports acks until ctx ends; the first failed publish ends it with an
// error (the pipeline then replays from the confirmed LSN).
func (p *Publisher) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-p.acks:
			select {
			case <-e.f.Ok():
				if e.p != nil {
					e.p.Done(1)
				}
			case err := <-e.f.Err():
				return fmt.Errorf("%w %s (msg id %s): %w", ErrPublish, e.f.Msg().Subject, e.f.Msg().Header.Get(jetstream.MsgIDHeader), err)
			case <-ctx.Done():
				return ctx.Err()
			}
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
