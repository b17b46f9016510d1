package nats

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/internal/natstest"
)

func TestEnsureStream_KeepsOperatorSettings(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := natstest.Start(t)
	js, err := jetstream.New(s.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	// An operator's stream: a longer window, a size limit, one of our subjects.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EDGESYNC", Subjects: []string{"es.memory.>"},
		Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute, MaxBytes: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	st, err := EnsureStream(ctx, js, StreamConfig{Name: "EDGESYNC", SubjectPrefix: "es"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if cfg.Duplicates != 10*time.Minute || cfg.MaxBytes != 1<<30 || len(cfg.Subjects) != 5 {
		t.Fatalf("stream config changed or subjects missing: %+v", cfg)
	}
	// A window too short for replays is refused with the fix.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SHORT", Subjects: []string{"x.memory.>"}, Duplicates: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(ctx, js, StreamConfig{Name: "SHORT", SubjectPrefix: "x"}); err == nil || !strings.Contains(err.Error(), "--dupe-window") {
		t.Fatalf("short window: %v", err)
	}
}

func TestPublisher_AcksInOrderAndFailsOnOutage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := natstest.Start(t)
	nc := s.Conn(t)
	p, err := NewPublisher(nc, Config{MaxPending: 64, AckTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(ctx, p.JetStream(), StreamConfig{Name: "T", SubjectPrefix: "t"}); err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { runErr <- p.Run(rctx) }()
	tr := cdc.NewTracker(0)
	pend := tr.Open()
	for i := 0; i < 500; i++ {
		id := "t/" + string(rune('a'+i%26)) + "/" + time.Now().Format("150405.000000000")
		if err := p.Publish(ctx, Message("t.memory.image.created", id, []byte(`{}`)), pend); err != nil {
			t.Fatal(err)
		}
	}
	pend.Seal(7)
	for tr.Confirmed() != 7 {
		select {
		case err := <-runErr:
			t.Fatalf("publisher stopped: %v", err)
		case <-ctx.Done():
			t.Fatal("acks never completed")
		case <-time.After(5 * time.Millisecond):
		}
	}
	// With the server gone, a publish fails and Run reports it.
	s.Stop()
	_ = p.Publish(ctx, Message("t.memory.image.created", "lost", []byte(`{}`)), tr.Open())
	select {
	case err := <-runErr:
		if err == nil || !strings.Contains(err.Error(), "publish") {
			t.Fatalf("Run = %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not report the failed publish")
	}
}
