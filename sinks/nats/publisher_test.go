package nats

import (
	"context"
	"strconv"
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
	cfg := Config{MaxPending: 64, AckTimeout: 2 * time.Second}
	js, err := NewJetStream(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := NewPublisher(js, nil)
	if _, err := EnsureStream(ctx, js, StreamConfig{Name: "T", SubjectPrefix: "t"}); err != nil {
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
		if err := p.Publish(ctx, "", Message("t.memory.image.created", id, []byte(`{}`)), pend); err != nil {
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
	_ = p.Publish(ctx, "", Message("t.memory.image.created", "lost", []byte(`{}`)), tr.Open())
	select {
	case err := <-runErr:
		if err == nil || !strings.Contains(err.Error(), "publish") {
			t.Fatalf("Run = %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not report the failed publish")
	}
}

// storedIDs reads the stream's message ids in stored order.
func storedIDs(t *testing.T, ctx context.Context, js jetstream.JetStream, stream string) []string {
	t.Helper()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
	}
	return ids
}

// A failed publish must not let a later event of the same memory be stored
// before it; other memories go on.
func TestPublisher_KeyOrderSurvivesAFailedPublish(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := natstest.Start(t)
	js, err := NewJetStream(s.Conn(t), Config{AckTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(ctx, js, StreamConfig{Name: "T", SubjectPrefix: "t"}); err != nil {
		t.Fatal(err)
	}
	p := NewPublisher(js, cdc.NewBudget(1<<20))
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(ctx) }()
	tr := cdc.NewTracker(0)
	pend := tr.Open()
	// N of memory m1 goes to a subject no stream captures: its ack fails
	// (no responders), as a publish lost in an outage would.
	if err := p.Publish(ctx, "m1", Message("nowhere.memory.image.updated", "n", []byte(`{}`)), pend); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, "m1", Message("t.memory.image.deleted", "n+1", []byte(`{}`)), pend); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, "m2", Message("t.memory.image.created", "other", []byte(`{}`)), pend); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-runErr:
		if err == nil || !strings.Contains(err.Error(), "msg id n)") {
			t.Fatalf("Run = %v, want the failure of n", err)
		}
	case <-ctx.Done():
		t.Fatal("the failed publish was not reported")
	}
	// Whatever else was stored, n+1 of the same memory was not.
	deadline := time.Now().Add(5 * time.Second)
	var ids []string
	for time.Now().Before(deadline) {
		if ids = storedIDs(t, ctx, js, "T"); len(ids) > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, id := range ids {
		if id == "n+1" {
			t.Fatalf("n+1 was stored although n failed: %v", ids)
		}
	}
	if strings.Join(ids, ",") != "other" {
		t.Errorf("stored %v, want only the other memory's event", ids)
	}
}

// Events of many memories, interleaved, are all stored, each memory's in
// the order published, within a byte budget far below their total size.
func TestPublisher_KeysInOrderWithinBudget(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := natstest.Start(t)
	js, err := NewJetStream(s.Conn(t), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(ctx, js, StreamConfig{Name: "T", SubjectPrefix: "t"}); err != nil {
		t.Fatal(err)
	}
	budget := cdc.NewBudget(64 << 10)
	p := NewPublisher(js, budget)
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(ctx) }()
	tr := cdc.NewTracker(0)
	pend := tr.Open()
	body := []byte(`{"pad":"` + strings.Repeat("x", 4000) + `"}`)
	const keys, per = 10, 30
	for i := 0; i < per; i++ {
		for k := 0; k < keys; k++ {
			id := "k" + strconv.Itoa(k) + "/" + strconv.Itoa(i)
			if err := p.Publish(ctx, "k"+strconv.Itoa(k), Message("t.memory.note.updated", id, body), pend); err != nil {
				t.Fatal(err)
			}
			if used := budget.Used(); used > 64<<10 {
				t.Fatalf("budget holds %d bytes, more than its 64 KiB", used)
			}
		}
	}
	pend.Seal(9)
	for tr.Confirmed() != 9 {
		select {
		case err := <-runErr:
			t.Fatalf("publisher stopped: %v", err)
		case <-ctx.Done():
			t.Fatal("acks never completed")
		case <-time.After(5 * time.Millisecond):
		}
	}
	ids := storedIDs(t, ctx, js, "T")
	if len(ids) != keys*per {
		t.Fatalf("stored %d events, want %d", len(ids), keys*per)
	}
	next := map[string]int{}
	for _, id := range ids {
		k, n, _ := strings.Cut(id, "/")
		if want := strconv.Itoa(next[k]); n != want {
			t.Fatalf("memory %s: event %s stored where %s was due (%v)", k, n, want, ids)
		}
		next[k]++
	}
	if budget.Used() != 0 {
		t.Errorf("budget still holds %d bytes after every ack", budget.Used())
	}
}
