package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestServer_RestartKeepsStream(t *testing.T) {
	s := Start(t)
	nc := s.Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.a", []byte("1"), jetstream.WithMsgID("one")); err != nil {
		t.Fatal(err)
	}
	url := s.URL()
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.URL() != url {
		t.Fatalf("url changed across restart: %s -> %s", url, s.URL())
	}
	// The client reconnects; the stream and its dedupe state survive.
	var ack *jetstream.PubAck
	for ctx.Err() == nil {
		ack, err = js.Publish(ctx, "t.a", []byte("1"), jetstream.WithMsgID("one"))
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || !ack.Duplicate {
		t.Fatalf("after restart: ack=%+v err=%v, want a duplicate", ack, err)
	}
	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("stream has %d messages, want 1", n)
	}
}
