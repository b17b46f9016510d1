package api

import (
	"context"
	"strings"
	"testing"
)

// TestGalleryPage_ReadsEachItemsEdges: the gallery page builds on
// memory_presence yet reads only the page's items' edges (an index condition
// on the item's keys), never every memory's edges aggregated and joined.
func TestGalleryPage_ReadsEachItemsEdges(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	// Tiny tables: without this the planner rightly scans them whole.
	if _, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off`); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{galleryFirstPageSQL, galleryNextPageSQL} {
		args := []any{"10000000-0000-0000-0000-000000000001", 51}
		if q == galleryNextPageSQL {
			args = append(args, "10000000-0000-0000-0000-000000000002", "image")
		}
		plan := explain(t, tx, q, args...)
		perItem := 0
		for i, l := range plan {
			if strings.Contains(l, "ix_edges_memory on storage_edges") && i+1 < len(plan) &&
				strings.Contains(plan[i+1], "Index Cond:") && strings.Contains(plan[i+1], "gi.memory_id") {
				perItem++
			}
		}
		if p := strings.Join(plan, "\n"); perItem != 2 || strings.Contains(p, "Seq Scan on storage_edges") {
			t.Errorf("the page does not read its items' edges per item (presence and sync state):\n%s", p)
		}
	}
}
