package nats

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/internal/natstest"
)

func TestStoredFrom(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := natstest.Start(t)
	js, err := NewJetStream(s.Conn(t), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(ctx, js, StreamConfig{Name: "T", SubjectPrefix: "p"}); err != nil {
		t.Fatal(err)
	}
	pub := func(subject, id string) {
		t.Helper()
		if err := PublishSync(ctx, js, subject, id, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
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
		got, err := StoredFrom(ctx, js, "T", ChangeSubjects("p"), "s", from)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for id := range got {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		if strings.Join(ids, ",") != want {
			t.Errorf("StoredFrom(%s) = %v, want %s", from, ids, want)
		}
	}
	if _, err := StoredFrom(ctx, js, "MISSING", ChangeSubjects("p"), "s", 0); err == nil {
		t.Error("a missing stream is not an error")
	}
}
