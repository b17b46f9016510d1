package gallerystatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgesync/edgesync/internal/natstest"
	"github.com/edgesync/edgesync/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type published struct {
	subject, msgID string
	ev             Event
}

// recorder is a publisher that remembers what it was given; failNext makes
// the next publish fail after recording (as if the process died between the
// publish and the commit).
type recorder struct {
	mu       sync.Mutex
	msgs     []published
	failNext bool
}

func (r *recorder) publish(ctx context.Context, subject, msgID string, data []byte) error {
	var ev Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, published{subject, msgID, ev})
	if r.failNext {
		r.failNext = false
		return errors.New("lost the ack")
	}
	return nil
}

func (r *recorder) all() []published {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]published(nil), r.msgs...)
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type fixture struct {
	t    *testing.T
	pool *pgxpool.Pool
}

func (f fixture) exec(sql string, args ...any) {
	f.t.Helper()
	if _, err := f.pool.Exec(context.Background(), sql, args...); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
}

func (f fixture) id(sql string, args ...any) string {
	f.t.Helper()
	var id string
	if err := f.pool.QueryRow(context.Background(), sql, args...).Scan(&id); err != nil {
		f.t.Fatal(err)
	}
	return id
}

func (f fixture) note() string {
	n := f.id(`INSERT INTO notes (owner_id) VALUES (gen_random_uuid()) RETURNING id::text`)
	f.exec(`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present) VALUES ($1, 'note', 'metadata', 'neon-db', true)`, n)
	return n
}

func (f fixture) gallery(notes ...string) string {
	g := f.id(`INSERT INTO galleries (owner_id) VALUES (gen_random_uuid()) RETURNING id::text`)
	for _, n := range notes {
		f.exec(`INSERT INTO gallery_items (gallery_id, memory_id, memory_type) VALUES ($1, $2, 'note')`, g, n)
	}
	return g
}

func (f fixture) toICP(n string) {
	f.exec(`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present) VALUES ($1, 'note', 'metadata', 'icp-canister', true)`, n)
}

func start(t *testing.T, cfg Config, pool *pgxpool.Pool, pub PublishFunc) *Tracker {
	t.Helper()
	if cfg.Debounce == 0 {
		cfg.Debounce = 5 * time.Millisecond
	}
	if cfg.MVRefreshEvery == 0 {
		cfg.MVRefreshEvery = 20 * time.Millisecond
	}
	tr := New(cfg, pool, pub, nil, NewMetrics(prometheus.NewRegistry()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return tr
}

func TestTracker_OneEventPerStatusChange(t *testing.T) {
	pool := pgtest.Pool(t, pgtest.New(t))
	f := fixture{t, pool}
	n1, n2 := f.note(), f.note()
	g := f.gallery(n1, n2)
	other := f.gallery() // empty, untouched by the memory changes
	rec := &recorder{}
	tr := start(t, Config{SubjectPrefix: "es"}, pool, rec.publish)

	expect := func(n int, version int64, old *string, status string) {
		t.Helper()
		eventually(t, 5*time.Second, fmt.Sprintf("event %d (%s)", n, status), func() bool { return len(rec.all()) >= n })
		msgs := rec.all()
		if len(msgs) != n {
			t.Fatalf("%d events, want %d: %+v", len(msgs), n, msgs)
		}
		m := msgs[n-1]
		wantID := fmt.Sprintf("gallery/%s/%d/%s", g, version, status)
		if m.subject != "es.gallery.status" || m.msgID != wantID || m.ev.NewStatus != status || m.ev.GalleryID != g ||
			ptrStr(m.ev.OldStatus) != ptrStr(old) {
			t.Fatalf("event %d: %+v, want %s %s → %s", n, m, wantID, ptrStr(old), status)
		}
	}
	str := func(s string) *string { return &s }

	tr.GalleriesChanged(g)
	expect(1, 1, nil, "web2_only")
	f.toICP(n1)
	tr.MemoriesChanged(MemoryKey{n1, "note"})
	expect(2, 2, str("web2_only"), "partial")
	// A change that keeps the status publishes nothing: the next event is
	// still version 3.
	f.exec(`UPDATE storage_edges SET location = 'x' WHERE memory_id = $1`, n2)
	tr.MemoriesChanged(MemoryKey{n2, "note"})
	f.toICP(n2)
	tr.MemoriesChanged(MemoryKey{n2, "note"}, MemoryKey{n2, "note"})
	expect(3, 3, str("partial"), "stored_forever")
	if m := rec.all()[2].ev; m.TotalMemories != 2 || m.ICPCompleteMemories != 2 || !m.ICPComplete || !m.ICPAny {
		t.Fatalf("counts %+v", m)
	}

	// The MV catches up on its own.
	eventually(t, 5*time.Second, "gallery_presence_mv refreshed", func() bool {
		var st string
		err := pool.QueryRow(context.Background(), `SELECT status FROM gallery_presence_mv WHERE gallery_id = $1`, g).Scan(&st)
		return err == nil && st == "stored_forever"
	})
	var at time.Time
	if err := pool.QueryRow(context.Background(), `SELECT refreshed_at FROM edgesync_mv_refresh WHERE name = 'gallery_presence_mv'`).Scan(&at); err != nil {
		t.Fatal(err)
	}

	// An item leaves the gallery and the other loses its ICP copy: both
	// changes arrive before the debounce ends, so one event, to web2_only.
	f.exec(`DELETE FROM storage_edges WHERE memory_id = $1 AND backend = 'icp-canister'`, n1)
	f.exec(`DELETE FROM gallery_items WHERE memory_id = $1`, n2)
	tr.GalleriesChanged(g)
	tr.MemoriesChanged(MemoryKey{n1, "note"})
	expect(4, 4, str("stored_forever"), "web2_only")
	for _, m := range rec.all() {
		if m.ev.GalleryID == other {
			t.Fatalf("untouched gallery published: %+v", m)
		}
	}
}

func ptrStr(s *string) string {
	if s == nil {
		return "null"
	}
	return *s
}

func TestTracker_OverflowRechecksAll(t *testing.T) {
	pool := pgtest.Pool(t, pgtest.New(t))
	f := fixture{t, pool}
	var gs []string
	for i := 0; i < 3; i++ {
		gs = append(gs, f.gallery(f.note()))
	}
	rec := &recorder{}
	tr := start(t, Config{MaxPending: 2}, pool, rec.publish)
	// Three unknown memories overflow the set of two: every gallery is
	// rechecked (and, first seen, published).
	tr.MemoriesChanged(MemoryKey{"00000000-0000-0000-0000-000000000001", "note"}, MemoryKey{"00000000-0000-0000-0000-000000000002", "note"},
		MemoryKey{"00000000-0000-0000-0000-000000000003", "note"})
	eventually(t, 5*time.Second, "three events", func() bool { return len(rec.all()) >= 3 })
	seen := map[string]bool{}
	for _, m := range rec.all() {
		seen[m.ev.GalleryID] = true
		if m.msgID != "gallery/"+m.ev.GalleryID+"/1/"+m.ev.NewStatus {
			t.Fatalf("msg id %s", m.msgID)
		}
	}
	for _, g := range gs {
		if !seen[g] {
			t.Fatalf("gallery %s not rechecked", g)
		}
	}
}

// TestTracker_CrashBetweenPublishAndCommitIsDeduped publishes to a real
// JetStream stream: a publish whose commit does not happen is retried with
// the same msg id, and the stream keeps one message.
func TestTracker_CrashBetweenPublishAndCommitIsDeduped(t *testing.T) {
	pool := pgtest.Pool(t, pgtest.New(t))
	f := fixture{t, pool}
	g := f.gallery(f.note())
	ns := natstest.Start(t)
	js, err := ns.Conn(t).JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AddStream(&nats.StreamConfig{Name: "EDGESYNC", Subjects: []string{"edgesync.gallery.>"}, Duplicates: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	fail := true
	var ids []string
	pub := func(ctx context.Context, subject, msgID string, data []byte) error {
		if _, err := js.Publish(subject, data, nats.MsgId(msgID), nats.Context(ctx)); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		ids = append(ids, msgID)
		if fail {
			fail = false
			return errors.New("died before the commit")
		}
		return nil
	}
	tr := start(t, Config{}, pool, pub)
	tr.GalleriesChanged(g)
	eventually(t, 10*time.Second, "the retry", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ids) == 2
	})
	mu.Lock()
	if ids[0] != ids[1] || !strings.HasPrefix(ids[0], "gallery/"+g+"/1/") {
		t.Fatalf("ids %v", ids)
	}
	mu.Unlock()
	eventually(t, 5*time.Second, "the status stored", func() bool {
		var v int64
		err := pool.QueryRow(context.Background(), `SELECT version FROM edgesync_gallery_status WHERE gallery_id = $1`, g).Scan(&v)
		return err == nil && v == 1
	})
	info, err := js.StreamInfo("EDGESYNC")
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages, want 1", info.State.Msgs)
	}
}

func TestTracker_ChangedIsNonBlocking(t *testing.T) {
	// No Run: the calls must still return at once and stay bounded.
	tr := New(Config{MaxPending: 1000}, nil, nil, nil, nil)
	// Nothing consumes: a call that waited for room would never return.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100_000; i++ {
			tr.MemoriesChanged(MemoryKey{fmt.Sprintf("%036d", i), "note"})
			tr.GalleriesChanged(fmt.Sprint(i))
		}
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("MemoriesChanged/GalleriesChanged block when nobody runs the tracker")
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.memories)+len(tr.galleries) > 1001 || !tr.all {
		t.Fatalf("pending %d+%d all=%v", len(tr.memories), len(tr.galleries), tr.all)
	}
}

// storedRow reads the tracker's row of a gallery: status, migrating, failed,
// and whether gallery_created_at matches the gallery's created_at.
func storedRow(t *testing.T, pool *pgxpool.Pool, g string) (status string, migrating, failed int, created bool, err error) {
	t.Helper()
	err = pool.QueryRow(context.Background(), `SELECT s.status, s.migrating, s.failed, s.gallery_created_at IS NOT DISTINCT FROM g.created_at
		FROM edgesync_gallery_status s JOIN galleries g ON g.id = s.gallery_id WHERE s.gallery_id = $1`, g).
		Scan(&status, &migrating, &failed, &created)
	return
}

// TestTracker_SyncCountsFollowEdges: the tracker's row counts the items with
// an edge migrating and those with an edge failed, and follows them through
// changes that leave the status as it is (no event for those).
func TestTracker_SyncCountsFollowEdges(t *testing.T) {
	pool := pgtest.Pool(t, pgtest.New(t))
	f := fixture{t, pool}
	n1, n2 := f.note(), f.note()
	g := f.gallery(n1, n2, f.note()) // the third item has no edge but neon-db's, idle
	rec := &recorder{}
	tr := start(t, Config{}, pool, rec.publish)
	want := func(what string, migrating, failed int) {
		t.Helper()
		var st string
		var m, fl int
		var created bool
		var err error
		eventually(t, 5*time.Second, what, func() bool {
			st, m, fl, created, err = storedRow(t, pool, g)
			return err == nil && m == migrating && fl == failed && created
		})
		if st != "web2_only" {
			t.Fatalf("%s: status %s, want web2_only", what, st)
		}
	}
	tr.GalleriesChanged(g)
	want("first row", 0, 0)

	// Two ICP edges of one item migrating: one item migrating.
	f.exec(`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, present, sync_state)
		VALUES ($1, 'note', 'metadata', 'icp-canister', false, 'migrating'), ($2, 'note', 'metadata', 'icp-canister', false, 'migrating')`, n1, n2)
	tr.MemoriesChanged(MemoryKey{n1, "note"}, MemoryKey{n2, "note"})
	want("two migrating", 2, 0)

	f.exec(`UPDATE storage_edges SET sync_state = 'failed', sync_error = 'x' WHERE memory_id = $1 AND backend = 'icp-canister'`, n2)
	tr.MemoriesChanged(MemoryKey{n2, "note"})
	want("one migrating, one failed", 1, 1)

	// An edge of a memory in no gallery of ours changes nothing here.
	other := f.note()
	f.exec(`INSERT INTO storage_edges (memory_id, memory_type, artifact, backend, sync_state) VALUES ($1, 'note', 'metadata', 'icp-canister', 'failed')`, other)
	tr.MemoriesChanged(MemoryKey{other, "note"})

	f.exec(`UPDATE storage_edges SET sync_state = 'idle' WHERE backend = 'icp-canister' AND memory_id = ANY($1::uuid[])`, []string{n1, n2})
	tr.MemoriesChanged(MemoryKey{n1, "note"}, MemoryKey{n2, "note"})
	want("all idle again", 0, 0)
	if n := len(rec.all()); n != 1 {
		t.Fatalf("%d status events, want 1 (the counts changed, the status did not)", n)
	}
}

// TestTracker_AdoptsGalleriesWithoutItems: a gallery created without items
// changes nothing the CDC stream carries; the tracker finds it by itself.
func TestTracker_AdoptsGalleriesWithoutItems(t *testing.T) {
	pool := pgtest.Pool(t, pgtest.New(t))
	f := fixture{t, pool}
	rec := &recorder{}
	start(t, Config{AdoptEvery: 20 * time.Millisecond}, pool, rec.publish)
	g := f.gallery()
	eventually(t, 10*time.Second, "the empty gallery recorded", func() bool {
		st, _, _, created, err := storedRow(t, pool, g)
		return err == nil && st == "empty" && created
	})
	if msgs := rec.all(); len(msgs) != 1 || msgs[0].ev.GalleryID != g || msgs[0].ev.NewStatus != "empty" {
		t.Fatalf("events %+v, want one: %s empty", msgs, g)
	}
}

// TestTracker_AppGalleriesWithoutCreatedAt: edgesync needs only galleries.id
// of an app's own table; without created_at the tracker still records and
// publishes statuses (the row's created_at copy stays null).
func TestTracker_AppGalleriesWithoutCreatedAt(t *testing.T) {
	pool := pgtest.Pool(t, pgtest.New(t))
	f := fixture{t, pool}
	f.exec(`ALTER TABLE galleries DROP COLUMN created_at`)
	g := f.gallery(f.note())
	rec := &recorder{}
	tr := start(t, Config{}, pool, rec.publish)
	tr.GalleriesChanged(g)
	eventually(t, 5*time.Second, "the status event", func() bool { return len(rec.all()) == 1 })
	var status string
	var created *time.Time
	if err := pool.QueryRow(context.Background(), `SELECT status, gallery_created_at FROM edgesync_gallery_status WHERE gallery_id = $1`, g).
		Scan(&status, &created); err != nil || status != "web2_only" || created != nil {
		t.Fatalf("row: %s %v (%v), want web2_only with no created_at", status, created, err)
	}
}
