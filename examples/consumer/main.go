package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config says where the events are and who this consumer is.
type Config struct {
	Stream  string // EDGESYNC
	Prefix  string // edgesync
	Durable string // this service's consumer name: it remembers what was acknowledged
	// AckWait is how long an event may stay unacknowledged before it is
	// delivered again (30s when 0). An event delivered to a consumer that
	// stopped is redelivered only after it, and nothing after it comes
	// meanwhile (MaxAckPending 1).
	AckWait time.Duration
	// StartTime, when set, makes a new durable consumer start there instead
	// of at the first stored event (an existing one keeps its position).
	StartTime time.Time
}

// event is what this consumer needs of an envelope; fields added later are
// ignored (encoding/json skips unknown fields), as the compatibility policy
// asks.
type event struct {
	ID         string  `json:"id"`
	Op         string  `json:"op"`
	MemoryID   *string `json:"memory_id"`
	MemoryType string  `json:"memory_type"`
	Backend    string  `json:"backend"`
	Artifact   string  `json:"artifact"`
	Source     struct {
		CommitLSN string `json:"commit_lsn"`
	} `json:"source"`
	After *struct {
		Present *bool `json:"present"`
	} `json:"after"`
}

// Model is this example's state: which edges of which memory are present.
// A real service keeps it in its own database.
type Model struct {
	// Edges: memory id → "artifact@backend" → present.
	Edges map[string]map[string]bool
	// Memories: memory id → type, for memories that exist.
	Memories map[string]string
	// Applied is every event id whose effect is in the model. Keep it in
	// the same transaction as the effect; prune ids older than the stream's
	// MaxAge.
	Applied map[string]bool
	// Resyncs counts slot_lost events handled.
	Resyncs int
}

// NewModel returns an empty model.
func NewModel() *Model {
	return &Model{Edges: map[string]map[string]bool{}, Memories: map[string]string{}, Applied: map[string]bool{}}
}

// Consumer applies edgesync events to a Model.
type Consumer struct {
	js    jetstream.JetStream
	cfg   Config
	model *Model
	log   io.Writer
	// Resync re-reads the state from the source of truth (Postgres or the
	// edgesync API) after a lost slot; nil in this example clears the model.
	Resync func(ctx context.Context, m *Model) error
}

// NewConsumer returns a consumer of cfg's stream that applies to model.
func NewConsumer(js jetstream.JetStream, cfg Config, model *Model, log io.Writer) *Consumer {
	return &Consumer{js: js, cfg: cfg, model: model, log: log}
}

// consumerConfig is the durable consumer: memory and edge events and the
// slot_lost event (which a consumer keeping state must not filter out),
// explicit acks, and one unacknowledged event at a time so events are
// handled in stream order, also across redeliveries.
func (c *Consumer) consumerConfig() jetstream.ConsumerConfig {
	p := c.cfg.Prefix
	cc := jetstream.ConsumerConfig{
		Durable:        c.cfg.Durable,
		FilterSubjects: []string{p + ".memory.>", p + ".edge.>", p + ".sync.slot_lost"},
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        c.cfg.AckWait,
		MaxAckPending:  1,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if cc.AckWait <= 0 {
		cc.AckWait = 30 * time.Second
	}
	return cc
}

// Run consumes until ctx ends (then it returns nil).
func (c *Consumer) Run(ctx context.Context) error {
	cc := c.consumerConfig()
	if !c.cfg.StartTime.IsZero() {
		if _, err := c.js.Consumer(ctx, c.cfg.Stream, c.cfg.Durable); errors.Is(err, jetstream.ErrConsumerNotFound) {
			seq, err := startSeq(ctx, c.js, c.cfg.Stream, c.cfg.StartTime)
			if err != nil {
				return err
			}
			cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq
		} else if err != nil {
			return err
		}
		// else: an existing durable consumer keeps its position (and the
		// server refuses to change its start).
	}
	cons, err := c.js.CreateOrUpdateConsumer(ctx, c.cfg.Stream, cc)
	if err != nil {
		return fmt.Errorf("consumer %s on stream %s: %w", c.cfg.Durable, c.cfg.Stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := c.handle(ctx, msg); err != nil {
			// Not acknowledged: redelivered after AckWait, and nothing
			// after it is delivered meanwhile (MaxAckPending 1).
			fmt.Fprintf(c.log, "event %s on %s: %v (will be redelivered)\n", msg.Headers().Get(jetstream.MsgIDHeader), msg.Subject(), err)
			_ = msg.NakWithDelay(time.Second)
			continue
		}
		// Acknowledge even when ctx just ended: the effect is recorded, and
		// an ack lost to a shutdown costs a redelivery after AckWait that
		// holds up every later event (MaxAckPending 1). A lost ack is
		// harmless otherwise: the redelivery is skipped by its id.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err = msg.DoubleAck(actx)
		cancel()
		if err != nil {
			fmt.Fprintf(c.log, "ack %s: %v\n", msg.Subject(), err)
		}
	}
}

// startSeq is the sequence of the first event stored at or after t (the
// next one to come when there is none yet). A consumer with several filter
// subjects and DeliverByStartTime can skip events on nats-server 2.15.2
// (its start is moved to the first message of one filter even when another
// filter matches events before it; see nats-io/nats-server#6076), so the
// time is turned into a sequence here with an unfiltered ordered consumer,
// and the durable consumer starts by sequence.
func startSeq(ctx context.Context, js jetstream.JetStream, stream string, t time.Time) (uint64, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	oc, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &t, HeadersOnly: true})
	if err != nil {
		return 0, err
	}
	batch, err := oc.FetchNoWait(1)
	if err != nil {
		return 0, err
	}
	for m := range batch.Messages() {
		if md, err := m.Metadata(); err == nil {
			return md.Sequence.Stream, nil
		}
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq + 1, nil
}

// handle applies one message.
func (c *Consumer) handle(ctx context.Context, msg jetstream.Msg) error {
	if msg.Subject() == c.cfg.Prefix+".sync.slot_lost" {
		return c.slotLost(ctx)
	}
	var ev event
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		return fmt.Errorf("not an edgesync envelope: %w", err)
	}
	if ev.ID == "" {
		return errors.New("envelope without id")
	}
	if c.model.Applied[ev.ID] {
		return nil // applied before (a redelivery, or an event stored twice)
	}
	switch {
	case strings.HasPrefix(msg.Subject(), c.cfg.Prefix+".memory."):
		c.applyMemory(ev)
	case strings.HasPrefix(msg.Subject(), c.cfg.Prefix+".edge."):
		c.applyEdge(ev)
	}
	c.model.Applied[ev.ID] = true // with the effect, in one transaction in a real service
	fmt.Fprintf(c.log, "applied %s %s %s\n", ev.ID, msg.Subject(), deref(ev.MemoryID))
	return nil
}

func (c *Consumer) applyMemory(ev event) {
	switch ev.Op {
	case "created", "updated", "snapshot":
		c.model.Memories[*ev.MemoryID] = ev.MemoryType
	case "deleted":
		delete(c.model.Memories, *ev.MemoryID)
	case "truncated": // memory_id is null: every memory of the type is gone
		for id, typ := range c.model.Memories {
			if typ == ev.MemoryType {
				delete(c.model.Memories, id)
			}
		}
	default:
		// An op added in a later version: skip it, do not fail.
	}
}

func (c *Consumer) applyEdge(ev event) {
	id, key := *ev.MemoryID, ev.Artifact+"@"+ev.Backend
	if ev.Op == "deleted" || ev.After == nil {
		delete(c.model.Edges[id], key)
		return
	}
	if c.model.Edges[id] == nil {
		c.model.Edges[id] = map[string]bool{}
	}
	c.model.Edges[id][key] = ev.After.Present != nil && *ev.After.Present
}

// slotLost: changes made while the slot was gone may have no events, and
// ids of later changes may repeat ids seen before (a database restored to an
// earlier point restarts its WAL positions). So the state is read again
// from the source of truth and the id set starts over.
func (c *Consumer) slotLost(ctx context.Context) error {
	c.model.Resyncs++
	c.model.Applied = map[string]bool{}
	if c.Resync != nil {
		return c.Resync(ctx, c.model)
	}
	c.model.Edges, c.model.Memories = map[string]map[string]bool{}, map[string]string{}
	fmt.Fprintln(c.log, "slot lost: state cleared; re-read it from Postgres or the edgesync API")
	return nil
}

func deref(s *string) string {
	if s == nil {
		return "-"
	}
	return *s
}

func getenv(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(getenv("NATS_URL", nats.DefaultURL), nats.Name("edgesync-example-consumer"), nats.MaxReconnects(-1))
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer: connect to NATS:", err)
		os.Exit(1)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
	cfg := Config{Stream: getenv("EDGESYNC_STREAM", "EDGESYNC"), Prefix: getenv("EDGESYNC_SUBJECT_PREFIX", "edgesync"), Durable: getenv("CONSUMER_NAME", "example-consumer")}
	if err := NewConsumer(js, cfg, NewModel(), os.Stdout).Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}
