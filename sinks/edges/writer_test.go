package edges

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func ptr[T any](v T) *T { return &v }

const (
	m1 = "00000000-0000-0000-0000-000000000001"
	m2 = "00000000-0000-0000-0000-000000000002"
	m3 = "00000000-0000-0000-0000-000000000003"
)

func dump(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT memory_id::text, memory_type::text, artifact::text, backend::text, present,
		coalesce(location, ''), coalesce(size_bytes, -1) FROM storage_edges`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id, typ, art, be, loc string
		var present bool
		var size int64
		if err := rows.Scan(&id, &typ, &art, &be, &present, &loc, &size); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %s %s %s %v %s %d", id[len(id)-1:], typ, art, be, present, loc, size))
	}
	sort.Strings(out)
	return out
}

func equal(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// The changes of a stream, in commit order.
var stream = []Op{
	{MemoryID: m1, MemoryType: "image", URLKnown: true, URL: ptr("u1"), Size: ptr(int64(10))},
	{MemoryID: m2, MemoryType: "note"},
	{MemoryID: m3, MemoryType: "image", URLKnown: true, URL: ptr("u3")},
	{MemoryID: m1, MemoryType: "image", URLKnown: true, URL: ptr("u1-v2"), Size: ptr(int64(20))},
	{MemoryID: m1, MemoryType: "image", URLKnown: false},                     // unchanged TOAST URL
	{MemoryID: m3, MemoryType: "image", URLKnown: true, Size: ptr(int64(5))}, // URL cleared
	{MemoryID: m2, MemoryType: "note", Delete: true},
}

var final = []string{
	"1 image asset vercel-blob true u1-v2 20",
	"1 image metadata neon-db true  -1",
	"3 image asset vercel-blob false  5",
	"3 image metadata neon-db true  -1",
}

// TestWriter_ConformsOneByOneBatchedAndReplayed: applying the changes one by
// one, all in one batch, or again after a "crash" (a replay from the start)
// gives the same edges, and a replay writes nothing.
func TestWriter_ConformsOneByOneBatchedAndReplayed(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []string{"one by one", "one batch"} {
		t.Run(mode, func(t *testing.T) {
			pool := pgtest.Pool(t, pgtest.New(t))
			w := NewWriter(pool, Config{})
			if mode == "one by one" {
				for _, op := range stream {
					if _, err := w.Apply(ctx, []Op{op}); err != nil {
						t.Fatal(err)
					}
				}
			} else if _, err := w.Apply(ctx, stream); err != nil {
				t.Fatal(err)
			}
			if got := dump(t, pool); !equal(got, final) {
				t.Fatalf("edges\n%v\nwant\n%v", got, final)
			}
			// Replay after a crash: the last batch again, then the whole stream.
			st, err := w.Apply(ctx, stream[len(stream)-2:])
			if err != nil {
				t.Fatal(err)
			}
			if st != (Stats{}) {
				t.Errorf("replaying the last changes wrote %+v, want nothing", st)
			}
			if _, err := w.Apply(ctx, stream); err != nil {
				t.Fatal(err)
			}
			if got := dump(t, pool); !equal(got, final) {
				t.Fatalf("after the replay\n%v\nwant\n%v", got, final)
			}
		})
	}
}

func TestWriter_DeletePolicyAndTruncate(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.New(t))
	if _, err := pool.Exec(ctx, `INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present)
		VALUES ($1, 'image', 'metadata', 'icp-canister', true), ($2, 'image', 'metadata', 'icp-canister', true)`, m1, m3); err != nil {
		t.Fatal(err)
	}
	keep := NewWriter(pool, Config{})
	if _, err := keep.Apply(ctx, stream); err != nil {
		t.Fatal(err)
	}
	if _, err := keep.Apply(ctx, []Op{{MemoryID: m1, MemoryType: "image", Delete: true}}); err != nil {
		t.Fatal(err)
	}
	var icp int
	_ = pool.QueryRow(ctx, `SELECT count(*) FROM storage_edges WHERE memory_id = $1`, m1).Scan(&icp)
	if icp != 1 {
		t.Fatalf("keep policy: %d edges left of the deleted memory, want its ICP edge only", icp)
	}
	del := NewWriter(pool, Config{DeleteICPEdges: true})
	n, err := del.Truncate(ctx, "image")
	if err != nil {
		t.Fatal(err)
	}
	if got := dump(t, pool); len(got) != 0 || n != 4 {
		t.Fatalf("after truncate under the delete policy (%d deleted): %v", n, got)
	}
}

// TestBatcher_ReportsDurableAfterCommit: the transactions' effects are done
// only once their batch is written, in order, and a truncate waits for what
// was queued before it.
func TestBatcher_ReportsDurableAfterCommit(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool := pgtest.Pool(t, pgtest.New(t))
	b := NewBatcher(NewWriter(pool, Config{MaxBatch: 3, FlushInterval: time.Millisecond}), nil)
	errc := make(chan error, 1)
	go func() { errc <- b.Run(ctx) }()
	tr := cdc.NewTracker(1)
	p1 := tr.Open()
	for _, op := range stream[:4] {
		if err := b.Add(ctx, op, p1); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.AddTruncate(ctx, "note", p1); err != nil {
		t.Fatal(err)
	}
	p1.Seal(100)
	deadline := time.Now().Add(10 * time.Second)
	for tr.Confirmed() != 100 {
		if time.Now().After(deadline) {
			t.Fatal("the batch was never reported durable")
		}
		select {
		case err := <-errc:
			t.Fatal(err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	var notes, images int
	_ = pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE memory_type = 'note'), count(*) FILTER (WHERE memory_type = 'image') FROM storage_edges`).Scan(&notes, &images)
	if notes != 0 || images != 4 {
		t.Fatalf("notes %d (truncated: want 0), images %d (want 4)", notes, images)
	}
}

func TestCollapse(t *testing.T) {
	ops := Collapse([]Op{
		{MemoryID: m1, MemoryType: "image", URLKnown: true, URL: ptr("a")},
		{MemoryID: m1, MemoryType: "image"}, // URL not carried: keeps "a"
		{MemoryID: m2, MemoryType: "image", URLKnown: true, URL: ptr("b")},
		{MemoryID: m2, MemoryType: "image", URLKnown: true}, // cleared after being set in the batch
		{MemoryID: m1, MemoryType: "video", Delete: true},   // another type: another memory
	})
	if len(ops) != 3 {
		t.Fatalf("%d ops, want 3", len(ops))
	}
	if !ops[0].URLKnown || *ops[0].URL != "a" {
		t.Errorf("unchanged URL lost: %+v", ops[0])
	}
	if ops[1].URL != nil || !ops[1].hadURL {
		t.Errorf("a URL set then cleared in one batch must leave a not-present edge: %+v", ops[1])
	}
	if !ops[2].Delete {
		t.Errorf("%+v", ops[2])
	}
}
