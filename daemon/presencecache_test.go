package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgesync/edgesync/internal/pgtest"
)

// getJSON GETs path on an instance and decodes the answer.
func getJSON(t *testing.T, addr, path string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, raw)
	}
	return resp.StatusCode, out
}

// metricValue reads one sample of the instance's metrics ("" when absent).
func metricValue(p *proc, sample string) string {
	for _, line := range strings.Split(p.metrics(), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			return v
		}
	}
	return ""
}

// TestPresenceCache_LeaderAndStandby: both instances answer presence from
// memory, and an edge change made in Postgres (not through the daemon)
// becomes visible in both instances' gallery and memory presence once its
// event is in the stream: the standby invalidates from the stream as the
// leader does. The gallery counts follow the status tracker, and a
// membership change, which no event carries, shows within the cache's TTL.
func TestPresenceCache_LeaderAndStandby(t *testing.T) {
	e := newEnv(t, pgtest.New(t))
	a := e.start(t)
	eventually(t, 30*time.Second, "a leads", func() (bool, string) { return a.leader(), "" })
	waitSlot(t, e.pool, "edgesync")
	b := e.start(t)
	pods := []*proc{a, b}
	for _, p := range pods {
		eventually(t, 30*time.Second, "the presence cache on "+p.addr+" follows the stream", func() (bool, string) {
			return metricValue(p, "edgesync_presence_cache_active") == "1", ""
		})
	}
	if b.leader() {
		t.Fatal("b leads; want it standby")
	}
	ctx := context.Background()
	var img, note, gal string
	if err := e.pool.QueryRow(ctx, `INSERT INTO images (owner_id, title, url, size_bytes) VALUES (gen_random_uuid(), 'p', 'https://blob/p.jpg', 10) RETURNING id::text`).Scan(&img); err != nil {
		t.Fatal(err)
	}
	if err := e.pool.QueryRow(ctx, `INSERT INTO notes (owner_id, title, body) VALUES (gen_random_uuid(), 'n', 'b') RETURNING id::text`).Scan(&note); err != nil {
		t.Fatal(err)
	}
	if err := e.pool.QueryRow(ctx, `INSERT INTO galleries (owner_id, title) VALUES (gen_random_uuid(), 'g') RETURNING id::text`).Scan(&gal); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `INSERT INTO gallery_items (gallery_id, memory_id, memory_type, position) VALUES ($1, $2, 'image', 1), ($1, $3, 'note', 2)`, gal, img, note); err != nil {
		t.Fatal(err)
	}
	galleryPath := "/api/galleries/" + gal + "/presence"
	memoryPath := "/api/memories/image/" + img + "/presence"
	itemICP := func(body map[string]any) any {
		for _, m := range body["memories"].([]any) {
			if m := m.(map[string]any); m["memory_id"] == img {
				return m["icp_complete"]
			}
		}
		return nil
	}
	// Both instances serve the gallery from memory once the pipeline made
	// the image's edges.
	for _, p := range pods {
		eventually(t, 30*time.Second, "the image's edges in the gallery on "+p.addr, func() (bool, string) {
			code, body := getJSON(t, p.addr, galleryPath)
			if code != 200 {
				return false, fmt.Sprint(code, body)
			}
			g := body["gallery"].(map[string]any)
			return g["source"] == "memory" && itemICP(body) == false, fmt.Sprint(body)
		})
		if code, body := getJSON(t, p.addr, memoryPath); code != 200 || body["source"] != "memory" {
			t.Fatalf("memory presence on %s: %d %v", p.addr, code, body)
		}
	}

	before := map[*proc]string{}
	for _, p := range pods {
		before[p] = metricValue(p, `edgesync_presence_cache_invalidations_total{kind="memory"}`)
	}
	// The image goes to ICP, written straight into Postgres.
	if _, err := e.pool.Exec(ctx, `INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, content_hash)
		VALUES ($1, 'image', 'metadata', 'icp-canister', true, repeat('a', 64)), ($1, 'image', 'asset', 'icp-canister', true, repeat('b', 64))`, img); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	// Poll both instances in turn until each shows the change.
	seen := map[*proc]time.Duration{}
	eventually(t, 20*time.Second, "the ICP edges in the gallery page and the memory presence on both instances", func() (bool, string) {
		var last string
		for _, p := range pods {
			if _, ok := seen[p]; ok {
				continue
			}
			_, gb := getJSON(t, p.addr, galleryPath)
			_, mb := getJSON(t, p.addr, memoryPath)
			mp, _ := mb["presence"].(map[string]any)
			if itemICP(gb) == true && mp["icp_complete"] == true {
				seen[p] = time.Since(changed)
			} else {
				last = p.addr + ": " + fmt.Sprint(gb, mb)
			}
		}
		return len(seen) == len(pods), last
	})
	for _, p := range pods {
		t.Logf("%s (leader %v): the change was visible %s after its commit (polled)", p.addr, p == a, seen[p].Round(time.Millisecond))
		if after := metricValue(p, `edgesync_presence_cache_invalidations_total{kind="memory"}`); after == before[p] {
			t.Errorf("%s: no memory invalidation counted (%s): the change was not seen through the stream", p.addr, after)
		}
		// The counts follow once the tracker recomputed (1 of 2 complete).
		eventually(t, 20*time.Second, "the gallery counts on "+p.addr, func() (bool, string) {
			_, gb := getJSON(t, p.addr, galleryPath)
			g := gb["gallery"].(map[string]any)
			return g["icp_complete_memories"] == float64(1) && g["status"] == "partial" && g["source"] == "memory", fmt.Sprint(g)
		})
	}

	// A membership change is in no event: the TTL bounds it.
	var note2 string
	if err := e.pool.QueryRow(ctx, `INSERT INTO notes (owner_id, title, body) VALUES (gen_random_uuid(), 'n2', 'b') RETURNING id::text`).Scan(&note2); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `INSERT INTO gallery_items (gallery_id, memory_id, memory_type, position) VALUES ($1, $2, 'note', 3)`, gal, note2); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		eventually(t, 20*time.Second, "the added item on "+p.addr, func() (bool, string) {
			_, gb := getJSON(t, p.addr, galleryPath)
			return len(gb["memories"].([]any)) == 3, fmt.Sprint(gb)
		})
	}
}
