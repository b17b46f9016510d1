package edges

import (
	"context"
	"fmt"
	"sort"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgesync/edgesync/internal/pgtest"
)

// TestWriter_CollapseConformsToOneByOne: for sequences that delete and
// re-create a memory, or move its URL back and forth, within one batch, the
// batch leaves exactly the edges (every column a change could touch) that
// applying the same changes one by one leaves, under both ICP-edge policies,
// starting from a memory that already has web2 and ICP edges.
func TestWriter_CollapseConformsToOneByOne(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.New(t))
	img := func(url *string, size int64) Op {
		return Op{MemoryID: m1, MemoryType: "image", URLKnown: true, URL: url, Size: ptr(size)}
	}
	del := Op{MemoryID: m1, MemoryType: "image", Delete: true}
	toast := Op{MemoryID: m1, MemoryType: "image"} // an update that did not carry the URL
	note := Op{MemoryID: m1, MemoryType: "note"}
	noteDel := Op{MemoryID: m1, MemoryType: "note", Delete: true}
	sequences := map[string][]Op{
		"delete+insert":                 {del, img(nil, 0)},
		"delete+insert with URL":        {del, img(ptr("new"), 7)},
		"insert+delete":                 {img(ptr("new"), 7), del},
		"update URL→null→URL":           {img(nil, 3), img(ptr("back"), 4)},
		"update URL→null":               {img(ptr("mid"), 2), img(nil, 3)},
		"delete+insert with URL→null":   {del, img(ptr("new"), 7), img(nil, 8)},
		"delete+insert+toast update":    {del, img(ptr("new"), 7), toast},
		"delete+insert+delete+insert":   {del, img(ptr("a"), 1), del, img(nil, 0)},
		"insert+delete+insert":          {img(ptr("a"), 1), del, img(ptr("b"), 2)},
		"note delete+insert":            {noteDel, note},
		"update then delete+insert URL": {img(ptr("x"), 9), del, img(ptr("y"), 10)},
	}
	for _, policy := range []bool{false, true} {
		w := NewWriter(pool, Config{DeleteICPEdges: policy})
		for name, ops := range sequences {
			t.Run(fmt.Sprintf("delete ICP edges %v/%s", policy, name), func(t *testing.T) {
				seedMemory(t, pool)
				for _, op := range ops {
					if _, err := w.Apply(ctx, []Op{op}); err != nil {
						t.Fatal(err)
					}
				}
				want := fullDump(t, pool)
				seedMemory(t, pool)
				if _, err := w.Apply(ctx, ops); err != nil {
					t.Fatal(err)
				}
				if got := fullDump(t, pool); !equal(got, want) {
					t.Errorf("batched:\n  %v\none by one:\n  %v", got, want)
				}
				// A replay of the batch (after a crash) converges to the same edges.
				if _, err := w.Apply(ctx, ops); err != nil {
					t.Fatal(err)
				}
				if got := fullDump(t, pool); !equal(got, want) {
					t.Errorf("replayed batch:\n  %v\none by one:\n  %v", got, want)
				}
			})
		}
	}
}

// seedMemory resets storage_edges to one image and one note (the same id,
// two memories) with web2 edges and ICP edges that carry sync details.
func seedMemory(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	for _, q := range []string{
		`DELETE FROM storage_edges`,
		`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, location, size_bytes, content_hash, sync_state, sync_error) VALUES
			('` + m1 + `', 'image', 'metadata', 'neon-db', true, NULL, NULL, NULL, 'idle', NULL),
			('` + m1 + `', 'image', 'asset', 'vercel-blob', true, 'old', 5, 'blobhash', 'idle', NULL),
			('` + m1 + `', 'image', 'metadata', 'icp-canister', true, NULL, 1, 'mh', 'idle', NULL),
			('` + m1 + `', 'image', 'asset', 'icp-canister', false, NULL, NULL, NULL, 'failed', 'upload failed'),
			('` + m1 + `', 'note', 'metadata', 'neon-db', true, NULL, NULL, 'notehash', 'idle', NULL),
			('` + m1 + `', 'note', 'metadata', 'icp-canister', true, NULL, 1, 'nh', 'idle', NULL)`,
	} {
		if _, err := pool.Exec(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// fullDump lists every edge with every column a change could set.
func fullDump(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT memory_type::text, artifact::text, backend::text, present,
		coalesce(location, '-'), coalesce(size_bytes, -1), coalesce(content_hash, '-'), sync_state::text, coalesce(sync_error, '-')
		FROM storage_edges`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var typ, art, be, loc, hash, state, serr string
		var present bool
		var size int64
		if err := rows.Scan(&typ, &art, &be, &present, &loc, &size, &hash, &state, &serr); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s/%s/%s present=%v loc=%s size=%d hash=%s %s %s", typ, art, be, present, loc, size, hash, state, serr))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}
