package prodtest

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
)

// verdict is what the check found: the figures of the soak table.
type verdict struct {
	changes    int // logged changes (expected memory events)
	events     int // memory and edge messages read from the stream
	lost       int // logged changes with no event
	duplicated int // extra copies: memory events of one change, or messages of one msg id
	outOfOrder int // memory events stored before an earlier change of the same memory
	unexpected int // memory events of no logged change
	edgesDiff  string
	samples    []string // a few examples of what went wrong
}

func (v verdict) ok() bool {
	return v.lost == 0 && v.duplicated == 0 && v.outOfOrder == 0 && v.unexpected == 0 && v.edgesDiff == ""
}

func (v verdict) String() string {
	s := fmt.Sprintf("%d changes, %d events: lost %d, duplicated %d, out of order %d, unexpected %d", v.changes, v.events, v.lost, v.duplicated, v.outOfOrder, v.unexpected)
	if v.edgesDiff != "" {
		s += "; edges not converged: " + v.edgesDiff
	}
	if len(v.samples) > 0 {
		s += "; e.g. " + strings.Join(v.samples, "; ")
	}
	return s
}

// logged is one change_log row.
type logged struct {
	seq             int64
	memoryID, op, t string
}

func (l logged) key() string { return l.memoryID + "|" + l.op + "|" + l.t }

// stored is one message of the stream, in stream order.
type stored struct {
	subject, msgID string
	memoryID, op   string
	title          string
}

// check waits until the pipeline has caught up (the slot confirmed past the
// last logged change, the edges equal to what the memory rows require, every
// logged change in the stream), then compares the stream with change_log:
// every change exactly once, in per-memory commit order. A check that does
// not get there in time still returns its figures: a lost event is a finding,
// not a timeout.
func (e *env) check(within time.Duration) verdict {
	t := e.t
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		ok, msg := slotPast(ctx, e.pool)
		if ok {
			last = ""
			break
		}
		last = msg
		time.Sleep(100 * time.Millisecond)
	}
	if last != "" {
		t.Logf("the slot was not confirmed past the last change in %s: %s", within, last)
	}
	var v verdict
	for {
		v = compare(t, e.pool, readStream(t, e.js, e.nats.Status))
		v.edgesDiff = diffEdges(edgesOf(t, e.pool), expectedEdges(t, e.pool))
		if (v.lost == 0 && v.edgesDiff == "") || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	return v
}

// slotPast reports whether every slot of the database (one per pipeline) is
// confirmed past every logged change.
func slotPast(ctx context.Context, pool *pgxpool.Pool) (bool, string) {
	var ok bool
	var confirmed, target *string
	err := pool.QueryRow(ctx, `SELECT count(*) > 0 AND coalesce(bool_and(s.confirmed_flush_lsn > (SELECT max(lsn) FROM change_log)), true),
		string_agg(s.slot_name || ' ' || s.confirmed_flush_lsn::text, ', '), (SELECT max(lsn) FROM change_log)::text
		FROM pg_replication_slots s WHERE s.database = current_database()`).Scan(&ok, &confirmed, &target)
	if err != nil {
		return false, err.Error()
	}
	return ok, fmt.Sprintf("confirmed %s, last change at %s", deref(confirmed), deref(target))
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// compare holds the stream against change_log.
func compare(t testing.TB, pool *pgxpool.Pool, msgs []stored) verdict {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT seq, memory_id::text, op, coalesce(token, '') FROM change_log ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	var log []logged
	for rows.Next() {
		var l logged
		if err := rows.Scan(&l.seq, &l.memoryID, &l.op, &l.t); err != nil {
			t.Fatal(err)
		}
		log = append(log, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return compareLog(log, msgs)
}

// compareLog holds the stream's messages (in stream order) against the
// logged changes (in seq order).
func compareLog(log []logged, msgs []stored) verdict {
	// position of each change within its memory's history
	pos := map[string]int{}
	perMemory := map[string]int{}
	for _, l := range log {
		pos[l.key()] = perMemory[l.memoryID]
		perMemory[l.memoryID]++
	}
	v := verdict{changes: len(log), events: len(msgs)}
	sample := func(format string, args ...any) {
		if len(v.samples) < 5 {
			v.samples = append(v.samples, fmt.Sprintf(format, args...))
		}
	}
	seen := map[string]int{}
	ids := map[string]int{}
	highest := map[string]int{} // per memory, the latest history position stored so far
	for _, m := range msgs {
		if m.msgID != "" {
			ids[m.msgID]++
			if ids[m.msgID] == 2 {
				v.duplicated++
				sample("msg id %s stored twice (%s)", m.msgID, m.subject)
			} else if ids[m.msgID] > 2 {
				v.duplicated++
			}
		}
		if m.memoryID == "" || !strings.HasPrefix(m.subject, prefix+".memory.") {
			continue
		}
		k := logged{memoryID: m.memoryID, op: m.op, t: m.title}.key()
		p, known := pos[k]
		if !known {
			v.unexpected++
			sample("event %s %s %q matches no logged change", m.memoryID, m.op, m.title)
			continue
		}
		seen[k]++
		if seen[k] > 1 {
			if ids[m.msgID] == 1 { // not already counted by its msg id
				v.duplicated++
				sample("change %s stored twice under different msg ids", k)
			}
			continue
		}
		if h, ok := highest[m.memoryID]; ok && p < h {
			v.outOfOrder++
			sample("memory %s: change %d of its history stored after change %d", m.memoryID, p, h)
		}
		if h, ok := highest[m.memoryID]; !ok || p > h {
			highest[m.memoryID] = p
		}
	}
	for _, l := range log {
		if seen[l.key()] == 0 {
			v.lost++
			sample("change %d (%s %s) not in the stream", l.seq, l.memoryID, l.op)
		}
	}
	return v
}

// readStream reads every message of the stream in stream order. JetStream
// API errors are retried until the deadline: a loaded cluster may be between
// meta leaders for a moment ("no responders").
func readStream(t testing.TB, js jetstream.JetStream, diag func() string) []stored {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var info *jetstream.StreamInfo
	var cons jetstream.Consumer
	err := retry(ctx, func() error {
		st, err := js.Stream(ctx, streamName)
		if err != nil {
			return err
		}
		if info, err = st.Info(ctx); err != nil {
			return err
		}
		cons, err = st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
		return err
	})
	if err != nil {
		t.Fatalf("read stream %s: %v (%s)", streamName, err, diag())
	}
	if info.State.Msgs == 0 {
		return nil
	}
	var out []stored
	for last := uint64(0); last < info.State.LastSeq; {
		var batch jetstream.MessageBatch
		if err := retry(ctx, func() (err error) { batch, err = cons.FetchNoWait(1000); return err }); err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			last = meta.Sequence.Stream
			s := stored{subject: m.Subject(), msgID: m.Headers().Get(jetstream.MsgIDHeader)}
			if strings.HasPrefix(s.subject, prefix+".memory.") {
				var ev struct {
					Op       string          `json:"op"`
					MemoryID *string         `json:"memory_id"`
					After    json.RawMessage `json:"after"`
				}
				if err := json.Unmarshal(m.Data(), &ev); err != nil {
					t.Fatalf("message %d on %s is not an envelope: %v", last, s.subject, err)
				}
				s.op = ev.Op
				if ev.MemoryID != nil {
					s.memoryID = *ev.MemoryID
				}
				if ev.Op != "deleted" && len(ev.After) > 0 {
					var after struct {
						Title string `json:"title"`
					}
					_ = json.Unmarshal(ev.After, &after)
					s.title = after.Title
				}
			}
			out = append(out, s)
			if last >= info.State.LastSeq {
				break
			}
		}
		if err := batch.Error(); err != nil && ctx.Err() != nil {
			t.Fatal(err)
		}
		if n == 0 {
			if ctx.Err() != nil {
				t.Fatalf("read %d of the stream's %d messages before the deadline", len(out), info.State.Msgs)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return out
}

// retry calls f until it succeeds or ctx ends, and returns its last error.
func retry(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil || ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// edgesOf lists the web2 edges as comparable strings.
func edgesOf(t testing.TB, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT memory_id::text, memory_type::text, artifact::text, backend::text, present,
		coalesce(location, ''), coalesce(size_bytes, -1) FROM storage_edges WHERE backend <> 'icp-canister'`)
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
		out = append(out, edge(id, typ, art, be, present, loc, size))
	}
	sort.Strings(out)
	return out
}

func edge(id, typ, art, be string, present bool, loc string, size int64) string {
	return fmt.Sprintf("%s/%s/%s/%s present=%v loc=%q size=%d", id, typ, art, be, present, loc, size)
}

// expectedEdges is what CONTRACT section 4 requires of the workload's rows:
// a present metadata edge per memory, a present blob edge per image with a
// URL, and a not-present blob edge for an image whose URL was cleared.
func expectedEdges(t testing.TB, pool *pgxpool.Pool) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	rows, err := pool.Query(ctx, `SELECT id::text, url, coalesce(size_bytes, -1),
		EXISTS (SELECT 1 FROM change_log c WHERE c.memory_id = images.id AND c.op = 'updated') FROM images`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var url *string
		var size int64
		var updated bool
		if err := rows.Scan(&id, &url, &size, &updated); err != nil {
			t.Fatal(err)
		}
		out = append(out, edge(id, "image", "metadata", "neon-db", true, "", -1))
		switch {
		case url != nil:
			out = append(out, edge(id, "image", "asset", "vercel-blob", true, *url, size))
		case updated:
			out = append(out, edge(id, "image", "asset", "vercel-blob", false, "", size))
		}
	}
	rows.Close()
	rows, err = pool.Query(ctx, `SELECT id::text FROM notes`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		out = append(out, edge(id, "note", "metadata", "neon-db", true, "", -1))
	}
	rows.Close()
	sort.Strings(out)
	return out
}

// diffEdges says briefly what differs ("" when nothing does).
func diffEdges(got, want []string) string {
	g := map[string]bool{}
	for _, s := range got {
		g[s] = true
	}
	w := map[string]bool{}
	for _, s := range want {
		w[s] = true
	}
	var b strings.Builder
	missing, extra := 0, 0
	for _, s := range want {
		if !g[s] {
			if missing < 3 {
				fmt.Fprintf(&b, "missing %s; ", s)
			}
			missing++
		}
	}
	for _, s := range got {
		if !w[s] {
			if extra < 3 {
				fmt.Fprintf(&b, "extra %s; ", s)
			}
			extra++
		}
	}
	if missing+extra == 0 {
		return ""
	}
	return fmt.Sprintf("%d missing, %d extra: %s", missing, extra, b.String())
}
