package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestDemo runs the whole scripted demo: snapshot, changes, Store Forever of
// a gallery through the replica double, and a reconcile, ending cleanly.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer // run serialises its writes
	if err := run(ctx, &out, "127.0.0.1:0", true); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if first, _, _ := strings.Cut(out.String(), "\n"); !strings.HasPrefix(first, "storage console: http://127.0.0.1:") {
		t.Errorf("the first line is %q, want the storage console's URL", first)
	}
	for _, want := range []string{
		"edgesync.memory.image.created",
		"edgesync.edge.vercel-blob.updated",
		"edgesync.memory.note.deleted",
		"Summer trip  stored_forever  4",
		"edgesync.sync.progress",
		`"state":"done"`,
		"stopped cleanly",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
