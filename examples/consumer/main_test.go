package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/internal/natstest"
	natssink "github.com/edgesync/edgesync/sinks/nats"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), substr)
}

type env struct {
	t   *testing.T
	ctx context.Context
	nc  *nats.Conn
	js  jetstream.JetStream
}

const (
	memA = "0b3c8f3e-4a5e-4f7e-9a3c-1d2e3f4a5b6c"
	memB = "1b3c8f3e-4a5e-4f7e-9a3c-1d2e3f4a5b6c"
	memC = "2b3c8f3e-4a5e-4f7e-9a3c-1d2e3f4a5b6c"
)

// publish stores an envelope as the daemon does (msgID "" stores it without
// one, as a copy that JetStream cannot drop).
func (e *env) publish(subject, msgID, body string) {
	e.t.Helper()
	if err := natssink.PublishSync(e.ctx, e.js, subject, msgID, []byte(body)); err != nil {
		e.t.Fatal(err)
	}
}

func envelope(id, op, memID, extra string) string {
	return `{"id":"` + id + `","op":"` + op + `","memory_id":"` + memID + `","memory_type":"image"` + extra +
		`,"source":{"table":"public.images","lsn":"0/1","commit_lsn":"0/2","xid":5,"commit_time":"2026-12-03T12:00:00Z"},"before":null,"after":{"present":true},"emitted_at":"2026-12-03T12:00:00Z","added_in_a_later_version":{"x":1}}`
}

// consume runs a consumer until its log has want lines containing what and
// it has acknowledged everything, then stops it.
func (e *env) consume(cfg Config, m *Model, what string, want int) *syncBuffer {
	e.t.Helper()
	log := &syncBuffer{}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- NewConsumer(e.js, cfg, m, log).Run(ctx) }()
	deadline := time.Now().Add(15 * time.Second)
	for log.count(what) < want {
		if time.Now().After(deadline) {
			cancel()
			<-done
			e.t.Fatalf("%d of %d %q lines in the consumer's log:\n%s", log.count(what), want, what, log.b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Stop once the consumer has acknowledged everything it was given, as a
	// service drains before it exits (an event delivered but not handled
	// at the stop would come back only after AckWait).
	for {
		info, err := e.js.Consumer(e.ctx, cfg.Stream, cfg.Durable)
		if err != nil {
			e.t.Fatal(err)
		}
		ci, err := info.Info(e.ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		if ci.NumPending == 0 && ci.NumAckPending == 0 {
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("consumer %s not drained: %d pending, %d unacknowledged", cfg.Durable, ci.NumPending, ci.NumAckPending)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		e.t.Fatalf("consumer: %v", err)
	}
	return log
}

// TestConsumer_AppliesOncePerIDInOrderAndResyncs runs the example against a
// real NATS server: two edges of one commit are two events, a copy stored
// twice is applied once, a restarted durable consumer resumes after what it
// acknowledged, a slot_lost event resets the state and its ids, and a new
// consumer can start at a time.
func TestConsumer_AppliesOncePerIDInOrderAndResyncs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := natstest.Start(t)
	e := &env{t: t, ctx: ctx, nc: ns.Conn(t)}
	var err error
	if e.js, err = jetstream.New(e.nc); err != nil {
		t.Fatal(err)
	}
	if _, err := natssink.EnsureStream(ctx, e.js, natssink.StreamConfig{Name: "EDGESYNC", SubjectPrefix: "edgesync"}); err != nil {
		t.Fatal(err)
	}
	// A short AckWait: an event the server handed to a stopped run (its
	// pull request outlives it) comes back soon.
	cfg := Config{Stream: "EDGESYNC", Prefix: "edgesync", Durable: "svc", AckWait: time.Second}

	// One commit creating a memory's two edges: same memory_id and
	// commit_lsn, two ids. The second edge's event is then stored again
	// without a msg id (as a copy outside the duplicate window would be).
	e.publish("edgesync.memory.image.created", "edgesync/0/1/0", envelope("edgesync/0/1/0", "created", memA, ""))
	e.publish("edgesync.edge.neon-db.created", "edgesync/0/2/0", envelope("edgesync/0/2/0", "created", memA, `,"backend":"neon-db","artifact":"metadata"`))
	e.publish("edgesync.edge.vercel-blob.created", "edgesync/0/2/1", envelope("edgesync/0/2/1", "created", memA, `,"backend":"vercel-blob","artifact":"asset"`))
	e.publish("edgesync.edge.vercel-blob.created", "", envelope("edgesync/0/2/1", "created", memA, `,"backend":"vercel-blob","artifact":"asset"`))
	e.publish("edgesync.gallery.status", "gallery/x/1/web2_only", `{"gallery_id":"x"}`) // not in the filter
	m := NewModel()
	// The copy is delivered too (4 events), but applied once (3 lines).
	e.consume(cfg, m, "applied ", 3)
	if got := m.Edges[memA]; len(got) != 2 || !got["metadata@neon-db"] || !got["asset@vercel-blob"] || m.Memories[memA] != "image" || len(m.Applied) != 3 {
		t.Fatalf("model %+v", m)
	}

	// A restart resumes after what was acknowledged: nothing is applied again.
	before := time.Now()
	e.publish("edgesync.memory.image.created", "edgesync/0/3/0", envelope("edgesync/0/3/0", "created", memB, ""))
	m2 := NewModel()
	log := e.consume(cfg, m2, "applied ", 1)
	if len(m2.Applied) != 1 || m2.Memories[memB] != "image" || log.count(memA) != 0 {
		t.Fatalf("restarted consumer applied %v", m2.Applied)
	}

	// slot_lost: the state and the id set start over, so a later change
	// whose id repeats an old one (WAL positions restarted) is applied.
	e.publish("edgesync.sync.slot_lost", "edgesync/slot_lost/0/3", `{"event":"slot_lost","slot":"edgesync","last_confirmed_lsn":"0/3","detected_at":"2026-12-03T12:00:00Z"}`)
	e.publish("edgesync.memory.image.created", "edgesync/0/1/0/after-restore", envelope("edgesync/0/1/0", "created", memC, ""))
	e.consume(cfg, m2, "applied ", 1)
	if m2.Resyncs != 1 || len(m2.Memories) != 1 || m2.Memories[memC] != "image" {
		t.Fatalf("after slot_lost: resyncs %d, memories %v", m2.Resyncs, m2.Memories)
	}

	// A new consumer can start at a time instead of at the beginning.
	m3 := NewModel()
	log = e.consume(Config{Stream: "EDGESYNC", Prefix: "edgesync", Durable: "late", AckWait: time.Second, StartTime: before}, m3, "applied ", 2)
	// (B, then the slot_lost that clears the state, then C.)
	if log.count(memA) != 0 || log.count("applied edgesync/0/3/0") != 1 || m3.Resyncs != 1 || m3.Memories[memC] != "image" {
		t.Fatalf("consumer from %s: %v\n%s", before, m3.Memories, log.b.String())
	}
}
