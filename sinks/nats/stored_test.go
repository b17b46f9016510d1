package nats

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/internal/natstest"
)

// storedStream starts a NATS server with stream T (prefix p) and returns
// the JetStream context and a synchronous publish of an event with a msg id.
func storedStream(t *testing.T, ctx context.Context) (jetstream.JetStream, func(subject, id string)) {
	t.Helper()
	s := natstest.Start(t)
	js, err := NewJetStream(s.Conn(t), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(ctx, js, StreamConfig{Name: "T", SubjectPrefix: "p"}); err != nil {
		t.Fatal(err)
	}
	return js, func(subject, id string) {
		t.Helper()
		if err := PublishSync(ctx, js, subject, id, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
}

// sortedIDs lists a set of ids, sorted, comma-separated.
func sortedIDs(set map[string]struct{}) string {
	ids := make([]string, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return strings.Join(ids, ",")
}

func TestStoredFrom(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, pub := storedStream(t, ctx)
	// Slot s's changes in commit order, with other publishers in between:
	// gallery status, another slot's pipeline, a progress event, snapshots.
	pub("p.memory.image.snapshot", "s/snapshot/0/10/m0")
	for i, lsn := range []string{"0/20", "0/30", "0/40", "0/50", "0/60", "0/70"} {
		pub("p.memory.image.created", "s/"+lsn+"/0")
		pub("p.edge.neon-db.created", "s/"+lsn+"/1")
		pub("p.gallery.status", "gallery/g/"+lsn)
		pub("p.memory.note.created", "other/"+lsn+"/0")
		if i%2 == 0 {
			pub("p.sync.progress", "")
		}
	}
	cases := map[cdc.LSN]string{
		0x10: "s/0/20/0,s/0/20/1,s/0/30/0,s/0/30/1,s/0/40/0,s/0/40/1,s/0/50/0,s/0/50/1,s/0/60/0,s/0/60/1,s/0/70/0,s/0/70/1,s/snapshot/0/10/m0",
		0x50: "s/0/50/0,s/0/50/1,s/0/60/0,s/0/60/1,s/0/70/0,s/0/70/1",
		0x51: "s/0/60/0,s/0/60/1,s/0/70/0,s/0/70/1",
		0x70: "s/0/70/0,s/0/70/1",
		0x71: "",
	}
	for from, want := range cases {
		got, err := StoredFrom(ctx, js, "T", ChangeSubjects("p"), MemorySubjects("p", []string{"image"}), "s", from)
		if err != nil {
			t.Fatal(err)
		}
		if ids := sortedIDs(got); ids != want {
			t.Errorf("StoredFrom(%s) = %s, want %s", from, ids, want)
		}
	}
	if _, err := StoredFrom(ctx, js, "MISSING", ChangeSubjects("p"), nil, "s", 0); err == nil {
		t.Error("a missing stream is not an error")
	}
}

// countingJS counts the GetMsg requests of the streams it hands out.
type countingJS struct {
	jetstream.JetStream
	gets *int
}

func (c countingJS) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	st, err := c.JetStream.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return countingStream{st, c.gets}, nil
}

type countingStream struct {
	jetstream.Stream
	gets *int
}

func (c countingStream) GetMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error) {
	*c.gets++
	return c.Stream.GetMsg(ctx, seq, opts...)
}

// TestStoredFrom_AnotherPipelineFillsTheStream: slot s (images) published a
// few changes, then another pipeline (notes) 3,000 events, memory and edge,
// with a few more of s's in between. The search must stay a few requests per
// probe (it met the other pipeline's run and searches s's memory subjects
// instead of stepping through the run one request at a time, which took
// minutes when the second of two pipelines started) and still find exactly
// s's ids of the replay, its edge-only transactions included.
func TestStoredFrom_AnotherPipelineFillsTheStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, pub := storedStream(t, ctx)
	pub("p.memory.image.created", "s/0/20/0")
	pub("p.edge.neon-db.created", "s/0/20/1")
	pub("p.edge.neon-db.updated", "s/0/28/0") // an edge-only transaction of s
	for i := 0; i < 1500; i++ {
		lsn := fmt.Sprintf("0/%X", 0x1000+i)
		pub("p.memory.note.created", "other/"+lsn+"/0")
		pub("p.edge.neon-db.created", "other/"+lsn+"/1")
		if i == 700 {
			pub("p.memory.image.created", "s/0/30/0")
			pub("p.edge.vercel-blob.created", "s/0/30/1")
			pub("p.edge.neon-db.updated", "s/0/38/0")
		}
	}
	gets := 0
	cjs := countingJS{js, &gets}
	own := MemorySubjects("p", []string{"image"})
	for from, want := range map[cdc.LSN]string{
		0x10: "s/0/20/0,s/0/20/1,s/0/28/0,s/0/30/0,s/0/30/1,s/0/38/0",
		0x21: "s/0/28/0,s/0/30/0,s/0/30/1,s/0/38/0",
		0x31: "s/0/38/0",
		0x39: "",
	} {
		gets = 0
		got, err := StoredFrom(ctx, cjs, "T", ChangeSubjects("p"), own, "s", from)
		if err != nil {
			t.Fatal(err)
		}
		if ids := sortedIDs(got); ids != want {
			t.Errorf("StoredFrom(%s) = %s, want %s", from, ids, want)
		}
		// A probe of the change subjects that lands in the other pipeline's
		// run gives up after 64 of its messages; the search on the images'
		// memory subject is about 12 probes of one request: about 80 in all
		// (stepping through the run one message at a time: over 10,000).
		if gets > 400 {
			t.Errorf("StoredFrom(%s) made %d message requests", from, gets)
		}
	}
}
