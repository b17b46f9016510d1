package nats

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/internal/natstest"
)

func TestSubjectCovers(t *testing.T) {
	cases := []struct {
		pattern, sub string
		want         bool
	}{
		{"edgesync.>", "edgesync.memory.>", true},
		{"edgesync.>", "edgesync.admin.reconcile", true},
		{"edgesync.>", "edgesync", false},
		{"edgesync.memory.>", "edgesync.memory.>", true},
		{"edgesync.memory.>", "edgesync.>", false},
		{"edgesync.*.>", "edgesync.edge.>", true},
		{"edgesync.*", "edgesync.memory.>", false},
		{"a.*.c", "a.b.c", true},
		{"a.*.c", "a.*.c", true},
		{"a.b.c", "a.*.c", false},
		{"a.*.c", "a.>", false},
		{">", "anything.at.all", true},
		{"edgesync.memory.image.>", "edgesync.memory.>", false},
		{"other.>", "edgesync.memory.>", false},
	}
	for _, tc := range cases {
		if got := SubjectCovers(tc.pattern, tc.sub); got != tc.want {
			t.Errorf("SubjectCovers(%q, %q) = %v, want %v", tc.pattern, tc.sub, got, tc.want)
		}
	}
	if got := MissingSubjects([]string{"es.memory.>", "es.*.>"}, "es"); len(got) != 0 {
		t.Errorf("es.*.> covers every subject, missing %v", got)
	}
	if got := MissingSubjects([]string{"es.memory.>"}, "es"); len(got) != 4 {
		t.Errorf("missing %v, want the 4 other subjects", got)
	}
}

// TestEnsureStream_OperatorMistakes: each stream an operator can get wrong
// is refused once with ErrStreamUnusable and a one-line fix, instead of the
// daemon retrying forever; what is fine is used without changes.
func TestEnsureStream_OperatorMistakes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := natstest.Start(t)
	js, err := jetstream.New(s.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	create := func(cfg jetstream.StreamConfig) {
		t.Helper()
		if cfg.Duplicates == 0 {
			cfg.Duplicates = 5 * time.Minute
		}
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	refused := func(name, prefix, want string) {
		t.Helper()
		_, err := EnsureStream(ctx, js, StreamConfig{Name: name, SubjectPrefix: prefix})
		if !errors.Is(err, ErrStreamUnusable) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("stream %s: err %v, want ErrStreamUnusable naming %q on one line", name, err, want)
		}
	}

	// edgesync.> covers our subjects (no "subjects overlap" update) but
	// captures the admin subject.
	create(jetstream.StreamConfig{Name: "WIDE", Subjects: []string{"wide.>"}, Storage: jetstream.FileStorage})
	refused("WIDE", "wide", "captures the request-reply subject wide.admin.reconcile")
	info, _ := js.Stream(ctx, "WIDE")
	if got := info.CachedInfo().Config.Subjects; len(got) != 1 {
		t.Errorf("the refused stream was changed: %v", got)
	}

	// Only what the stream's own subjects do not cover is added, and said.
	create(jetstream.StreamConfig{Name: "COVER", Subjects: []string{"cv.memory.>", "cv.edge.>", "cv.gallery.>", "cv.reconcile.>", "other.>"}, Storage: jetstream.FileStorage})
	var notes []string
	st, err := EnsureStream(ctx, js, StreamConfig{Name: "COVER", SubjectPrefix: "cv", Notify: func(m string) { notes = append(notes, m) }})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.Subjects; len(got) != 6 || len(notes) != 2 || !strings.Contains(notes[0], "cv.sync.>") {
		t.Errorf("subjects %v, notes %v: want only cv.sync.> added, and said", got, notes)
	}
	if !st.CachedInfo().Config.AllowMsgTTL || !strings.Contains(notes[len(notes)-1], "allowed per-message TTLs") {
		t.Errorf("per-message TTLs not enabled on the existing stream, or not said: %v", notes)
	}

	create(jetstream.StreamConfig{Name: "MEM", Subjects: []string{"mem.memory.>"}, Storage: jetstream.MemoryStorage})
	refused("MEM", "mem", "file storage")
	create(jetstream.StreamConfig{Name: "WQ", Subjects: []string{"wq.memory.>"}, Storage: jetstream.FileStorage, Retention: jetstream.WorkQueuePolicy})
	refused("WQ", "wq", "limits retention")

	// Another stream holds one of our subjects: creating ours names it.
	create(jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"ov.edge.>"}, Storage: jetstream.FileStorage})
	refused("OVERLAP", "ov", "stream OTHER already captures ov.edge.>")

	// A new stream follows the configured replicas and size limit.
	st, err = EnsureStream(ctx, js, StreamConfig{Name: "NEW", SubjectPrefix: "nw", Replicas: 1, MaxBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if cfg := st.CachedInfo().Config; cfg.MaxBytes != 64<<20 || cfg.Storage != jetstream.FileStorage || cfg.Duplicates < 2*time.Minute {
		t.Errorf("created stream %+v", cfg)
	}
	var findings []string
	for _, f := range CheckStream(st.CachedInfo().Config, "nw") {
		if f.Fatal {
			t.Errorf("fatal finding on the daemon's own stream: %s", f.Msg)
		}
		findings = append(findings, f.Msg)
	}
	if len(findings) != 1 || !strings.Contains(findings[0], "1 replica") {
		t.Errorf("findings %v, want one warning about R1", findings)
	}
}
