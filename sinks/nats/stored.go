package nats

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/cdc"
)

// maxStored bounds the ids StoredFrom collects. The replay range is what
// was published after the last confirmed position: a few seconds of events
// at most, since the reader confirms as soon as the durable prefix moves.
const maxStored = 2_000_000

// ChangeSubjects matches memory and edge events (four tokens) and nothing
// else the stream captures (gallery, sync and reconcile subjects have three).
func ChangeSubjects(prefix string) string { return prefix + ".*.*.*" }

// idLSN parses the commit LSN of a change's message id
// (`<slot>/<commit LSN>/<index>`, or `<slot>/snapshot/<LSN>/<memory>`), and
// whether the id is one of slot's.
func idLSN(id, slot string) (cdc.LSN, bool) {
	rest, ok := strings.CutPrefix(id, slot+"/")
	if !ok {
		return 0, false
	}
	rest, _ = strings.CutPrefix(rest, "snapshot/")
	// An LSN is printed "hi/lo": it holds a slash itself.
	hi, rest, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, false
	}
	lo, _, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, false
	}
	l, err := pglogrepl.ParseLSN(hi + "/" + lo)
	if err != nil {
		return 0, false
	}
	return l, true
}

// StoredFrom returns the message ids of slot's changes with a commit LSN at
// or after from that the stream already holds: the part of a replay that
// was stored before a crash or an outage. The pipeline skips those instead
// of relying on the stream's duplicate window, which a long outage outlasts.
//
// The slot's messages are stored in commit order. A binary search over the
// stream's sequences finds the slot's last message with a commit LSN before
// from; the rest of the stream after it is read with an ordered,
// headers-only consumer on subjects up to the stream's last message at the
// time of the call.
//
// The search runs on subjects first. A probe that lands on another
// pipeline's message steps forward one message at a time, which with
// another pipeline filling the stream took minutes at startup
// (bench/scaleout); after maxForeign such steps it gives up and searches
// ownSubjects instead, the memory subjects of the pipeline's own memory
// types (MemorySubjects), which no other pipeline publishes to: the last of
// the slot's memory events before from bounds the replay from below just as
// well, only less tightly (its own edge-only transactions after it are read
// too).
func StoredFrom(ctx context.Context, js jetstream.JetStream, stream, subjects string, ownSubjects []string, slot string, from cdc.LSN) (map[string]struct{}, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	out := map[string]struct{}{}
	if info.State.Msgs == 0 || last < first {
		return out, nil
	}
	lo, ok, err := pastBefore(ctx, st, stream, subjects, slot, from, first, last, maxForeign)
	if err != nil {
		return nil, err
	}
	if !ok {
		lo = first
		for _, subject := range ownSubjects {
			after, _, err := pastBefore(ctx, st, stream, subject, slot, from, first, last, 0)
			if err != nil {
				return nil, err
			}
			lo = max(lo, after)
		}
	}
	if lo > last {
		return out, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subjects}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq: lo, HeadersOnly: true,
	})
	if err != nil {
		return nil, fmt.Errorf("stream %s: read from %d: %w", stream, lo, err)
	}
	idle := time.Now()
	for {
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			return nil, fmt.Errorf("stream %s: read from %d: %w", stream, lo, err)
		}
		n := 0
		done := false
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			id := m.Headers().Get(jetstream.MsgIDHeader)
			if l, ok := idLSN(id, slot); ok && l >= from {
				if len(out) >= maxStored {
					return nil, fmt.Errorf("stream %s holds more than %d events of slot %s after %s: too many to check; the duplicate window is the only guard", stream, maxStored, slot, from)
				}
				out[id] = struct{}{}
			}
			if md.Sequence.Stream >= last || md.NumPending == 0 {
				done = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("stream %s: read: %w", stream, err)
		}
		if done {
			return out, nil
		}
		if n > 0 {
			idle = time.Now()
		} else if time.Since(idle) > 2*time.Second {
			return out, nil // messages deleted meanwhile: nothing more to read
		} else {
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// MemorySubjects are the memory event subjects of the given memory types
// (`<prefix>.memory.<type>.*`): the subjects only the pipeline mapping
// those types publishes to.
func MemorySubjects(prefix string, memoryTypes []string) []string {
	out := make([]string, 0, len(memoryTypes))
	for _, t := range memoryTypes {
		out = append(out, prefix+".memory."+t+".*")
	}
	return out
}

// maxForeign is how many other pipelines' messages in a row StoredFrom's
// search on the change subjects steps over before it searches the memory
// subjects instead.
const maxForeign = 64

// errForeign ends a search that met more than its share of other
// pipelines' messages.
var errForeign = errors.New("too many other pipelines' messages")

// pastBefore returns the sequence after slot's last message on subject with
// a commit LSN before from (first when there is none). ok is false when a
// probe met more than maxForeign (> 0) other pipelines' messages in a row.
func pastBefore(ctx context.Context, st jetstream.Stream, stream, subject, slot string, from cdc.LSN, first, last uint64, maxForeign int) (uint64, bool, error) {
	// at reports the first of slot's messages on subject at or after seq
	// (ok false: none up to last).
	at := func(seq uint64) (uint64, cdc.LSN, bool, error) {
		for skipped := 0; seq <= last; skipped++ {
			if maxForeign > 0 && skipped > maxForeign {
				return 0, 0, false, errForeign
			}
			m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				return 0, 0, false, nil
			}
			if err != nil {
				return 0, 0, false, fmt.Errorf("stream %s: read message %d: %w", stream, seq, err)
			}
			if m.Sequence > last {
				return 0, 0, false, nil
			}
			if l, ok := idLSN(m.Header.Get(jetstream.MsgIDHeader), slot); ok {
				return m.Sequence, l, true, nil
			}
			seq = m.Sequence + 1 // another pipeline's message: look further
		}
		return 0, 0, false, nil
	}
	// Smallest seq in [first, last+1] whose next message of ours is at or
	// after from (last+1: none is).
	lo, hi := first, last+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		s, l, ok, err := at(mid)
		if errors.Is(err, errForeign) {
			return first, false, nil
		}
		if err != nil {
			return 0, false, err
		}
		switch {
		case !ok:
			hi = mid
		case l >= from:
			hi = mid
		default:
			lo = s + 1
		}
	}
	return lo, true, nil
}
