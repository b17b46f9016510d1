package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ReadStream reads every message of stream up to its last sequence at the
// time of the call, in stream order, with an ordered consumer. Every message
// up to that sequence must arrive within two minutes: a read that gave up
// early would look like lost events.
func ReadStream(tb testing.TB, js jetstream.JetStream, stream string) []jetstream.Msg {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	var out []jetstream.Msg
	for last := uint64(0); last < info.State.LastSeq; {
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			tb.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				tb.Fatal(err)
			}
			last = meta.Sequence.Stream
			out = append(out, m)
			if last >= info.State.LastSeq {
				break
			}
		}
		if err := batch.Error(); err != nil {
			tb.Fatal(err)
		}
		if n == 0 {
			if ctx.Err() != nil {
				tb.Fatalf("read %d of stream %s's %d messages before the deadline", len(out), stream, info.State.Msgs)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return out
}
