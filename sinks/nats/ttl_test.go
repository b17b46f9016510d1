package nats

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/internal/natstest"
)

// TestProgressMessage_ExpiresWhileChangesStay: upload progress published
// with its Nats-TTL (on core NATS, as the daemon does) leaves the stream after
// the TTL; a change event published at the same time stays.
func TestProgressMessage_ExpiresWhileChangesStay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := natstest.Start(t)
	nc := s.Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := EnsureStream(ctx, js, StreamConfig{Name: "TTL", SubjectPrefix: "tt"})
	if err != nil {
		t.Fatal(err)
	}
	if !st.CachedInfo().Config.AllowMsgTTL {
		t.Fatal("a stream EnsureStream creates must allow per-message TTLs")
	}
	sub := domain.Subjects{Prefix: "tt"}
	if err := PublishSync(ctx, js, sub.Memory("image", "created"), "tt/0/1/0", []byte(`{"id":"tt/0/1/0"}`)); err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishMsg(ProgressMessage(sub.SyncProgress(), []byte(`{"bytes_done":1}`), time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	count := func(subject string) uint64 {
		t.Helper()
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects[subject]
	}
	// The progress message is stored first (so its expiry is not a refusal).
	deadline := time.Now().Add(10 * time.Second)
	for count(sub.SyncProgress()) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the progress message never reached the stream (refused for its Nats-TTL?)")
		}
		time.Sleep(20 * time.Millisecond)
	}
	m, err := st.GetLastMsgForSubject(ctx, sub.SyncProgress())
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(jetstream.MsgTTLHeader); got != "1s" {
		t.Errorf("stored progress has Nats-TTL %q, want 1s", got)
	}
	deadline = time.Now().Add(15 * time.Second)
	for count(sub.SyncProgress()) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the progress message did not expire after its 1s TTL")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := count(sub.Memory("image", "created")); n != 1 {
		t.Errorf("the change event is gone with the progress: %d left", n)
	}
	if got := ProgressMessage("x", nil, 0).Header.Get(jetstream.MsgTTLHeader); got != ProgressTTL.String() {
		t.Errorf("default Nats-TTL %q, want %s", got, ProgressTTL)
	}
}

// TestEnsureStream_AllowsMsgTTLOnExistingStream: an operator's stream
// without per-message TTLs gets them (said through Notify); a stream that
// cannot be updated is still used, with a warning naming the fix.
func TestEnsureStream_AllowsMsgTTLOnExistingStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := natstest.Start(t)
	js, err := jetstream.New(s.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OLD", Subjects: Subjects("od"), Storage: jetstream.FileStorage, Duplicates: 5 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	var notes []string
	st, err := EnsureStream(ctx, js, StreamConfig{Name: "OLD", SubjectPrefix: "od", Notify: func(m string) { notes = append(notes, m) }})
	if err != nil {
		t.Fatal(err)
	}
	if !st.CachedInfo().Config.AllowMsgTTL || len(notes) != 1 || !strings.Contains(notes[0], "--allow-msg-ttl") {
		t.Errorf("allow_msg_ttl %v, notes %v", st.CachedInfo().Config.AllowMsgTTL, notes)
	}
	for _, f := range CheckStream(st.CachedInfo().Config, "od") {
		if strings.Contains(f.Msg, "TTL") {
			t.Errorf("finding about TTLs on a stream that allows them: %s", f.Msg)
		}
	}
	cfg := st.CachedInfo().Config
	cfg.AllowMsgTTL = false
	found := false
	for _, f := range CheckStream(cfg, "od") {
		if strings.Contains(f.Msg, "--allow-msg-ttl") {
			found = !f.Fatal
		}
	}
	if !found {
		t.Error("CheckStream does not warn (non-fatally) about a stream without per-message TTLs")
	}

	// An update that fails (a user without $JS.API.STREAM.UPDATE) is a
	// warning, never an error: change events must not wait for progress.
	notes = nil
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "NOUPD", Subjects: Subjects("nu"), Storage: jetstream.FileStorage, Duplicates: 5 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	failing := &failUpdate{JetStream: js}
	st, err = EnsureStream(ctx, failing, StreamConfig{Name: "NOUPD", SubjectPrefix: "nu", Notify: func(m string) { notes = append(notes, m) }})
	if err != nil {
		t.Fatalf("EnsureStream failed for a TTL update: %v", err)
	}
	if st.CachedInfo().Config.AllowMsgTTL || len(notes) != 1 || !strings.Contains(notes[0], "nats stream edit NOUPD --allow-msg-ttl") {
		t.Errorf("notes %v", notes)
	}
}

// failUpdate refuses stream updates, as a NATS user without
// $JS.API.STREAM.UPDATE is refused.
type failUpdate struct{ jetstream.JetStream }

func (f *failUpdate) UpdateStream(context.Context, jetstream.StreamConfig) (jetstream.Stream, error) {
	return nil, errors.New("nats: permissions violation")
}
