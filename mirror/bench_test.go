package mirror_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/edgesync/edgesync/icp"
	"github.com/edgesync/edgesync/mirror"
)

// BenchmarkMirror measures the whole mirror (River job, row read, asset download with SHA-256,
// upload, edge writes) against a bare loop of the same client calls from memory: 50 small
// memories (100 KiB assets), and one 50 MiB asset. Each iteration runs the bare loop and then the
// mirror on an emptied canister, so drifting machine load hits both alike; x-bare is the
// mirror's throughput over the bare loop's. Run it with:
//
//	go test -run '^$' -bench BenchmarkMirror -benchtime 5x ./mirror/
func BenchmarkMirror(b *testing.B) {
	e := newMirrorEnv(b, icp.Config{CallTimeout: time.Minute})
	small, smallHash := asset(100<<10, 21)
	big, bigHash := asset(50<<20, 22)
	smallURL, bigURL := e.blobs.put("small.jpg", small), e.blobs.put("big.mp4", big)
	m := e.start(b, mirror.Config{}, nil)
	ctx := context.Background()
	meta := bytes.Repeat([]byte(`{"k":"v"}`), 300/9) // about the size of a row's JSON

	for _, c := range []struct {
		name string
		n    int
		url  string
		data []byte
		hash string
	}{
		{"50-small", 50, smallURL, small, smallHash},
		{"50MiB", 1, bigURL, big, bigHash},
	} {
		b.Run(c.name, func(b *testing.B) {
			var bare, mirror time.Duration
			for range b.N {
				wipe(b, e)
				ids := make([]string, c.n)
				for i := range ids {
					ids[i] = randomUUID(b)
				}
				start := time.Now()
				for _, id := range ids {
					if _, err := e.client.PutMetadata(ctx, id, meta); err != nil {
						b.Fatal(err)
					}
					if _, err := e.client.UploadAsset(ctx, id, bytes.NewReader(c.data), int64(len(c.data)), c.hash, nil); err != nil {
						b.Fatal(err)
					}
				}
				bare += time.Since(start)

				wipe(b, e)
				for i := range ids {
					ids[i] = e.memory(b, "images", c.url, len(c.data))
					e.storeForeverEdges(b, ids[i])
				}
				start = time.Now()
				for _, id := range ids {
					m.Wake(id, "image")
				}
				e.waitStored(b, ids)
				mirror += time.Since(start)
			}
			total := float64(c.n * b.N)
			mb := total * float64(len(c.data)) / 1e6
			b.ReportMetric(total/bare.Seconds(), "bare-memories/s")
			b.ReportMetric(total/mirror.Seconds(), "mirror-memories/s")
			b.ReportMetric(mb/bare.Seconds(), "bare-MB/s")
			b.ReportMetric(mb/mirror.Seconds(), "mirror-MB/s")
			b.ReportMetric(bare.Seconds()/mirror.Seconds(), "x-bare")
		})
	}
}

// wipe empties the canister so each iteration uploads everything and memory stays bounded.
func wipe(b *testing.B, e *mirrorEnv) {
	b.Helper()
	if err := e.replica.Restart(false); err != nil {
		b.Fatal(err)
	}
	// The restart closed the client's kept-alive connections; a POST on one fails with EOF and
	// is not retried by net/http. Spend them here, not in the timed part.
	for range 8 {
		if _, err := e.client.Status(context.Background(), "00000000-0000-4000-8000-000000000000"); err == nil {
			return
		}
	}
	b.Fatal("the replica does not answer after its restart")
}

// storeForeverEdges inserts migrating icp edges for an image without waking the mirror.
func (e *mirrorEnv) storeForeverEdges(tb testing.TB, id string) {
	tb.Helper()
	if _, err := e.pool.Exec(context.Background(), `INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, sync_state)
		SELECT $1, 'image', a, 'icp-canister', false, 'migrating' FROM unnest('{metadata,asset}'::artifact_t[]) a`, id); err != nil {
		tb.Fatal(err)
	}
}

// waitStored polls until both icp edges of every id are stored.
func (e *mirrorEnv) waitStored(tb testing.TB, ids []string) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var n int
		if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM storage_edges
			WHERE backend = 'icp-canister' AND present AND sync_state = 'idle' AND memory_id = ANY($1::uuid[])`, ids).Scan(&n); err != nil {
			tb.Fatal(err)
		}
		if n == 2*len(ids) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d edges stored after 5 minutes", n, 2*len(ids))
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

// randomUUID is newUUID for benchmarks.
func randomUUID(tb testing.TB) string {
	tb.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
