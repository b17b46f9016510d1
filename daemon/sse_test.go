package daemon

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgesync/edgesync/internal/icpreplica"
	"github.com/edgesync/edgesync/internal/pgtest"
	"github.com/edgesync/edgesync/internal/ssetest"
)

// sseLine is one event of a sync-status stream as a client sees it.
type sseLine struct{ name, id, data string }

// openStream follows GET /api/storage/sync-status/stream of an instance; the
// events arrive on the channel until the test ends.
func openStream(t *testing.T, addr, lastID string) <-chan sseLine {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/api/storage/sync-status/stream", nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream on %s answered %s", addr, resp.Status)
	}
	ch := make(chan sseLine, 1024)
	go func() {
		defer resp.Body.Close()
		ssetest.Scan(resp.Body, false, func(e ssetest.Event) { ch <- sseLine{name: e.Name, id: e.ID, data: e.Data} })
	}()
	return ch
}

func takeEvents(t *testing.T, who string, ch <-chan sseLine, n int) []string {
	t.Helper()
	var out []string
	deadline := time.After(30 * time.Second)
	for len(out) < n {
		select {
		case ev := <-ch:
			out = append(out, ev.name+":"+ev.id)
		case <-deadline:
			t.Fatalf("%s: %d of %d events within 30s: %v", who, len(out), n, out)
		}
	}
	return out
}

// TestSSE_LeaderAndStandbyCarryTheSameStream: two instances as the
// Deployment runs them; after five inserts both instances' streams carry the
// same ten edge events under the same ids, in the stream's order, and a client
// resumes on the other instance with Last-Event-ID.
func TestSSE_LeaderAndStandbyCarryTheSameStream(t *testing.T) {
	e := newEnv(t, pgtest.New(t))
	a := e.start(t)
	eventually(t, 30*time.Second, "a leads", func() (bool, string) { return a.leader(), "" })
	waitSlot(t, e.pool, "edgesync")
	b := e.start(t)
	for _, p := range []*proc{a, b} {
		eventually(t, 30*time.Second, "the SSE feed on "+p.addr+" caught up", func() (bool, string) {
			return strings.Contains(p.metrics(), "\nedgesync_sse_feed_caught_up 1"), ""
		})
	}
	if b.leader() {
		t.Fatal("b leads; want it standby")
	}
	onA, onB := openStream(t, a.addr, ""), openStream(t, b.addr, "")
	for _, p := range []*proc{a, b} {
		eventually(t, 10*time.Second, "a stream client on "+p.addr, func() (bool, string) {
			return strings.Contains(p.metrics(), "\nedgesync_sse_clients 1"), ""
		})
	}

	for i := 0; i < 5; i++ {
		if _, err := e.pool.Exec(context.Background(), `INSERT INTO images (owner_id, title, url, size_bytes) VALUES (gen_random_uuid(), $1, $2, 10)`,
			fmt.Sprint("sse", i), fmt.Sprintf("https://blob/sse%d.jpg", i)); err != nil {
			t.Fatal(err)
		}
	}
	inserted := time.Now()
	// Each insert makes a metadata and an asset edge: ten edge events.
	gotA := takeEvents(t, "leader", onA, 10)
	tookA := time.Since(inserted)
	gotB := takeEvents(t, "standby", onB, 10)
	tookB := time.Since(inserted)
	if fmt.Sprint(gotA) != fmt.Sprint(gotB) {
		t.Fatalf("leader carried %v\nstandby carried %v", gotA, gotB)
	}
	var want []string
	for _, m := range readStream(t, e.ns.URL(), "EDGESYNC") {
		if strings.HasPrefix(m.Subject, "edgesync.edge.") {
			want = append(want, "sync:"+m.MsgID)
		}
	}
	if fmt.Sprint(gotA) != fmt.Sprint(want) {
		t.Fatalf("the SSE streams carried %v\nthe JetStream stream holds the edge events %v", gotA, want)
	}
	t.Logf("leader and standby each carried %d events with the same ids; the last arrived %s (leader) and %s (standby) after the last insert committed",
		len(gotA), tookA.Round(time.Millisecond), tookB.Round(time.Millisecond))

	// A client that saw five events on the leader resumes on the standby.
	lastID := strings.TrimPrefix(gotA[4], "sync:")
	if got := takeEvents(t, "resumed on the standby", openStream(t, b.addr, lastID), 5); fmt.Sprint(got) != fmt.Sprint(gotA[5:]) {
		t.Fatalf("resumed on the standby after %s: %v\nwant %v", lastID, got, gotA[5:])
	}
}

// TestSSE_ICPProgressOnBothInstances: the ICP mirror runs on the leader, but
// its upload progress reaches the standby's stream clients too (through the
// JetStream stream), and the "store forever" request may go to the standby.
func TestSSE_ICPProgressOnBothInstances(t *testing.T) {
	e := newEnv(t, pgtest.New(t))
	replica := icpreplica.StartTest(t, icpreplica.Config{})
	asset := bytes.Repeat([]byte("edgesync"), 8<<10) // 64 KiB
	blob := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(asset) }))
	t.Cleanup(blob.Close)
	icpEnv := []string{
		"EDGESYNC_ICP_URL=" + replica.URL(),
		"EDGESYNC_ICP_CANISTER_ID=" + replica.CanisterID().String(),
		"EDGESYNC_ICP_FETCH_ROOT_KEY=true",
		"EDGESYNC_ASSET_HOSTS=" + strings.TrimPrefix(blob.URL, "http://"),
	}
	a := startProc(t, e.dbURL, e.ns.URL(), e.logf, icpEnv...)
	eventually(t, 30*time.Second, "a leads", func() (bool, string) { return a.leader(), "" })
	waitSlot(t, e.pool, "edgesync")
	b := startProc(t, e.dbURL, e.ns.URL(), e.logf, icpEnv...)
	for _, p := range []*proc{a, b} {
		eventually(t, 30*time.Second, "the SSE feed on "+p.addr+" caught up", func() (bool, string) {
			return strings.Contains(p.metrics(), "\nedgesync_sse_feed_caught_up 1"), ""
		})
	}
	onA, onB := openStream(t, a.addr, ""), openStream(t, b.addr, "")
	for _, p := range []*proc{a, b} {
		eventually(t, 10*time.Second, "a stream client on "+p.addr, func() (bool, string) {
			return strings.Contains(p.metrics(), "\nedgesync_sse_clients 1"), ""
		})
	}
	var id string
	if err := e.pool.QueryRow(context.Background(), `INSERT INTO images (owner_id, title, url, size_bytes) VALUES (gen_random_uuid(), 'icp', $1, $2) RETURNING id::text`,
		blob.URL+"/a.jpg", len(asset)).Scan(&id); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", "http://"+b.addr+"/api/memories/image/"+id+"/store-forever", nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("store-forever on the standby answered %s", resp.Status)
	}
	// Until the upload's last progress event: every event before it, the
	// same on both instances.
	want := fmt.Sprintf(`"memory_id":%q,"memory_type":"image","bytes_done":%d,"bytes_total":%d`, id, len(asset), len(asset))
	untilDone := func(who string, ch <-chan sseLine) []string {
		var seen []string
		deadline := time.After(60 * time.Second)
		for {
			select {
			case ev := <-ch:
				seen = append(seen, ev.name+":"+ev.id)
				if ev.name == "progress" && strings.Contains(ev.data, want) {
					return seen
				}
			case <-deadline:
				t.Fatalf("%s: no final progress event of %s within 60s; saw %v", who, id, seen)
			}
		}
	}
	gotA, gotB := untilDone("leader", onA), untilDone("standby", onB)
	if fmt.Sprint(gotA) != fmt.Sprint(gotB) {
		t.Fatalf("leader carried %v\nstandby carried %v", gotA, gotB)
	}
	t.Logf("both instances carried %d events up to the upload's final progress event", len(gotA))
}
