package ssefeed

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/edgesync/edgesync/domain"
)

// Hub is where the feed delivers; the api package's Hub satisfies it.
type Hub interface {
	// Publish sends an edge change as a "sync" event with SSE id id.
	Publish(id string, data []byte)
	// PublishEvent sends an event of another name (here "progress").
	PublishEvent(name, id string, data []byte)
	// Backfill adds an event from before this instance started to the
	// resume ring without sending it.
	Backfill(name, id string, data []byte)
}

// Invalidator learns which presence answers the stream's changes make stale;
// the presence cache (internal/presencecache) satisfies it.
type Invalidator interface {
	// MemoryChanged is called for every edge event, with the memory of its
	// key (before and after images of an update that moved the edge: both).
	MemoryChanged(id, memoryType string)
	// GalleryChanged is called for every gallery status event.
	GalleryChanged(id string)
	// Following(true) is called when the feed (re)subscribed: what was read
	// from Postgres before may miss changes whose events it did not pass
	// on. Following(false) when it lost the stream.
	Following(on bool)
}

// Config is what the daemon decides for the feed.
type Config struct {
	// Stream is the JetStream stream (EDGESYNC_STREAM).
	Stream string
	// Subjects builds the subjects under EDGESYNC_SUBJECT_PREFIX.
	Subjects domain.Subjects
	// Backfill is how many stream messages (of any subject) before the
	// stream's end at start are read into the hub's resume ring (default
	// 8192: about the api's default ring of 4096 edge events, the rest of
	// the stream being mostly memory events). 0 takes the default; a
	// negative value turns backfill off.
	Backfill int
	// RetryMax caps the wait between attempts while the stream is missing
	// or NATS is unreachable (default 5s).
	RetryMax time.Duration
	// Invalidator, when set, also gets every live edge event and the gallery
	// status events (`<prefix>.gallery.status`, which the hub never sees).
	Invalidator Invalidator
}

// Feed follows the stream into the hub. Build it with New and run it with Run.
type Feed struct {
	cfg     Config
	js      jetstream.JetStream
	hub     Hub
	log     *zap.Logger
	metrics *metrics

	// Owned by the goroutine that reads the stream.
	next    uint64    // the next stream sequence the hub wants; 0: not started
	live    uint64    // sequences up to this one were stored before the start
	created time.Time // the stream's creation time: another one is a new stream

	mu    sync.Mutex
	ready bool // caught up with the stream's end at start
}

// New builds a feed; it does no I/O.
func New(cfg Config, js jetstream.JetStream, hub Hub, log *zap.Logger, reg prometheus.Registerer) *Feed {
	if cfg.Backfill == 0 {
		cfg.Backfill = 8192
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 5 * time.Second
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Feed{cfg: cfg, js: js, hub: hub, log: log.With(zap.String("component", "ssefeed")), metrics: newMetrics(reg)}
}

// Run follows the stream until ctx ends; it never gives up on its own: a
// missing stream (the leader creates it) or an unreachable NATS is retried.
// It returns nil when ctx ends.
func (f *Feed) Run(ctx context.Context) error {
	wait := 100 * time.Millisecond
	for {
		started := time.Now()
		err := f.follow(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > time.Minute {
			wait = 100 * time.Millisecond
		}
		f.metrics.restarts.Inc()
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			f.log.Debug("stream not there yet; waiting for the leader to create it", zap.String("stream", f.cfg.Stream))
		} else {
			f.log.Warn("stream feed interrupted; resuming", zap.Error(err), zap.Uint64("next_seq", f.next), zap.Duration("retry_in", wait))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(wait*2, f.cfg.RetryMax)
	}
}

// CaughtUp reports whether the feed has read the stream up to where it was
// when the feed started (the resume ring is then filled).
func (f *Feed) CaughtUp() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

// follow reads the stream from f.next (or, the first time, from a little
// before its end) until ctx ends or the consumer fails for good. The ordered
// consumer recreates itself after NATS restarts and missed heartbeats; follow
// only returns for what that cannot ride out (stream gone or recreated, NATS
// away for more than a few seconds, connection closed).
func (f *Feed) follow(ctx context.Context) error {
	st, err := f.js.Stream(ctx, f.cfg.Stream)
	if err != nil {
		return err
	}
	start := f.startSeq(st.CachedInfo())
	filter := []string{f.cfg.Subjects.Prefix + ".edge.>", f.cfg.Subjects.SyncProgress()}
	if f.cfg.Invalidator != nil {
		filter = append(filter, f.cfg.Subjects.GalleryStatus())
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: filter,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    start,
		// The server forgets the consumer soon after this instance dies.
		InactiveThreshold: time.Minute,
		// The library recreates the consumer by itself (NATS restart, missed
		// heartbeats) but, left unbounded, would retry forever from its old
		// position when the stream itself is gone; after a few failed
		// attempts follow returns and Run resubscribes from fresh stream
		// state (see startSeq).
		MaxResetAttempts: 3,
	})
	if err != nil {
		return err
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	if start > f.live || cons.CachedInfo().NumPending == 0 {
		f.setReady() // nothing of the past to read
	}
	if inv := f.cfg.Invalidator; inv != nil {
		// Every change stored after the stream state read above reaches
		// read: answers read from Postgres from now on stay correct.
		inv.Following(true)
		defer inv.Following(false)
	}
	// Stop may wait for a consumer reset in progress (up to its request
	// timeout while NATS is away); shutdown does not wait for it: the reader
	// ends by itself and delivers nothing after ctx ended.
	done := make(chan error, 1)
	go func() { done <- f.read(ctx, st, it) }()
	select {
	case err := <-done:
		it.Stop()
		return err
	case <-ctx.Done():
		go it.Stop()
		return nil
	}
}

// startSeq is where a (re)subscription starts.
func (f *Feed) startSeq(info *jetstream.StreamInfo) uint64 {
	st := info.State
	recreated := !f.created.IsZero() && !info.Created.Equal(f.created)
	f.created = info.Created
	if f.next == 0 {
		f.live = st.LastSeq
		start := uint64(1)
		if f.cfg.Backfill > 0 && st.LastSeq > uint64(f.cfg.Backfill) {
			start = st.LastSeq - uint64(f.cfg.Backfill) + 1
		} else if f.cfg.Backfill < 0 {
			start = st.LastSeq + 1
		}
		f.next = max(start, st.FirstSeq, 1)
		return f.next
	}
	if recreated || st.LastSeq+1 < f.next {
		// The stream was deleted and created again (its sequences restart):
		// all of it is new; the old ids stay in the ring harmlessly.
		f.log.Warn("the stream was created again; following it from its start",
			zap.Uint64("last_seq", st.LastSeq), zap.Uint64("was_at", f.next))
		f.next, f.live = max(st.FirstSeq, 1), 0
	}
	if st.FirstSeq > f.next && st.Msgs > 0 {
		// The stream's limits removed messages this feed had not read yet
		// (a long outage): they cannot reach the hub.
		f.log.Warn("messages left the stream before this instance read them; its SSE clients miss them",
			zap.Uint64("from", f.next), zap.Uint64("to", st.FirstSeq-1))
		f.next = st.FirstSeq
	}
	return f.next
}

func (f *Feed) setReady() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.ready {
		f.ready = true
		f.metrics.caughtUp.Set(1)
	}
}

// errRecreated makes follow resubscribe from the start of a new stream.
var errRecreated = errors.New("the stream was deleted and created again")

// read hands messages to the hub until the iterator fails or ctx ends.
func (f *Feed) read(ctx context.Context, st jetstream.Stream, it jetstream.MessagesContext) error {
	consumer := ""
	for {
		msg, err := it.Next()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		md, err := msg.Metadata()
		if err != nil {
			f.log.Warn("stream message without metadata; skipped", zap.Error(err))
			continue
		}
		if consumer != "" && md.Consumer != consumer {
			// The library recreated its consumer (NATS restart, missed
			// heartbeats) at the sequence after the last one it delivered.
			// If the stream itself is new, that position means nothing:
			// resubscribe from the new stream's start before delivering.
			info, err := st.Info(ctx)
			if err != nil {
				return err
			}
			if !info.Created.Equal(f.created) {
				return errRecreated
			}
		}
		consumer = md.Consumer
		seq := md.Sequence.Stream
		if seq < f.next {
			f.metrics.skipped.Inc() // already handed over before a resubscription
			continue
		}
		f.next = seq + 1
		f.deliver(msg, seq <= f.live)
		if seq >= f.live || md.NumPending == 0 {
			f.setReady()
		}
		f.metrics.seq.Set(float64(seq))
	}
}

func (f *Feed) deliver(msg jetstream.Msg, past bool) {
	subject := msg.Subject()
	name := "sync"
	if subject == f.cfg.Subjects.SyncProgress() {
		name = "progress"
	} else if !strings.HasPrefix(subject, f.cfg.Subjects.Prefix+".edge.") {
		if subject == f.cfg.Subjects.GalleryStatus() && !past {
			f.invalidateGallery(msg.Data())
		}
		return
	}
	if name == "sync" && !past {
		f.invalidateMemory(msg.Data())
	}
	// Progress is published without a msg id: it has none to resume from.
	id := msg.Headers().Get(jetstream.MsgIDHeader)
	data := msg.Data()
	switch {
	case past:
		f.hub.Backfill(name, id, data)
		f.metrics.backfilled.Inc()
	case name == "sync":
		f.hub.Publish(id, data)
		f.metrics.events.WithLabelValues(name).Inc()
	default:
		f.hub.PublishEvent(name, id, data)
		f.metrics.events.WithLabelValues(name).Inc()
	}
}
