package pipeline

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/sinks/edges"
)

const (
	oidUUID = 2950
	oidText = 25
	oidInt8 = 20
)

var (
	images = cdc.NewRelation(1, "public", "images",
		cdc.Column{Name: "id", OID: oidUUID, Key: true}, cdc.Column{Name: "title", OID: oidText},
		cdc.Column{Name: "url", OID: oidText}, cdc.Column{Name: "size_bytes", OID: oidInt8})
	notes = cdc.NewRelation(2, "app", "notes",
		cdc.Column{Name: "id", OID: oidUUID, Key: true}, cdc.Column{Name: "body", OID: oidText})
	edgeRel = cdc.NewRelation(3, "public", "storage_edges",
		cdc.Column{Name: "memory_id", OID: oidUUID, Key: true}, cdc.Column{Name: "memory_type", OID: oidText, Key: true},
		cdc.Column{Name: "artifact", OID: oidText, Key: true}, cdc.Column{Name: "backend", OID: oidText, Key: true},
		cdc.Column{Name: "sync_state", OID: oidText})
	items = cdc.NewRelation(4, "public", "gallery_items",
		cdc.Column{Name: "gallery_id", OID: oidUUID, Key: true}, cdc.Column{Name: "memory_id", OID: oidUUID, Key: true})
	other = cdc.NewRelation(5, "public", "audit_log", cdc.Column{Name: "id", OID: oidInt8, Key: true})
)

const (
	m1 = "0b3e2a4c-1f2d-4e5f-8a9b-0c1d2e3f4a5b"
	m2 = "1c4f3b5d-2a3e-4f60-9bac-1d2e3f4a5b6c"
	g1 = "2d5a4c6e-3b4f-4a71-8cbd-2e3f4a5b6c7d"
)

func txt(s string) cdc.Value { return cdc.Value{Kind: cdc.Text, Data: []byte(s)} }

var null = cdc.Value{Kind: cdc.Null}

func str(s string) *string { return &s }
func i64(n int64) *int64   { return &n }

// TestRouter_Route is the mapping of decoded changes to edge operations and
// events, with neither Postgres nor NATS.
func TestRouter_Route(t *testing.T) {
	txn := &cdc.Txn{Xid: 7, CommitLSN: 0x16B3748, End: 0x16B3800, CommitTime: time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)}
	type want struct {
		edges     []edges.Op
		truncates []string
		subjects  []string
		ids       []string
		galleries []string
		all       bool
		problem   string
	}
	cases := []struct {
		name string
		ch   cdc.Change
		want want
	}{
		{"insert with URL", cdc.Change{Op: cdc.OpInsert, Rel: images, Index: 0, New: cdc.Row{txt(m1), txt("t"), txt("https://b/x.jpg"), txt("42")}},
			want{edges: []edges.Op{{MemoryID: m1, MemoryType: "image", URL: str("https://b/x.jpg"), Size: i64(42), URLKnown: true}},
				subjects: []string{"es.memory.image.created"}, ids: []string{"slot/0/16b3748/0"}}},
		{"insert without URL", cdc.Change{Op: cdc.OpInsert, Rel: images, Index: 1, New: cdc.Row{txt(m1), txt("t"), null, null}},
			want{edges: []edges.Op{{MemoryID: m1, MemoryType: "image", URLKnown: true}},
				subjects: []string{"es.memory.image.created"}, ids: []string{"slot/0/16b3748/1"}}},
		{"update with unchanged TOAST URL", cdc.Change{Op: cdc.OpUpdate, Rel: images, Index: 2, New: cdc.Row{txt(m1), txt("t2"), {Kind: cdc.Unchanged}, txt("-5")}},
			want{edges: []edges.Op{{MemoryID: m1, MemoryType: "image"}},
				subjects: []string{"es.memory.image.updated"}, ids: []string{"slot/0/16b3748/2"}}},
		{"primary key changed", cdc.Change{Op: cdc.OpUpdate, Rel: images, Index: 3, Old: cdc.Row{txt(m1)}, New: cdc.Row{txt(m2), txt("t"), null, null}},
			want{edges: []edges.Op{{MemoryID: m1, MemoryType: "image", Delete: true}, {MemoryID: m2, MemoryType: "image", URLKnown: true}},
				subjects: []string{"es.memory.image.updated"}, ids: []string{"slot/0/16b3748/3"}}},
		{"delete", cdc.Change{Op: cdc.OpDelete, Rel: images, Index: 4, Old: cdc.Row{txt(m1)}},
			want{edges: []edges.Op{{MemoryID: m1, MemoryType: "image", Delete: true}},
				subjects: []string{"es.memory.image.deleted"}, ids: []string{"slot/0/16b3748/4"}}},
		{"note in another schema", cdc.Change{Op: cdc.OpInsert, Rel: notes, Index: 5, New: cdc.Row{txt(m2), txt("hello")}},
			want{edges: []edges.Op{{MemoryID: m2, MemoryType: "note"}},
				subjects: []string{"es.memory.note.created"}, ids: []string{"slot/0/16b3748/5"}}},
		{"memory row without id", cdc.Change{Op: cdc.OpInsert, Rel: images, Index: 6, New: cdc.Row{null}},
			want{problem: "without an id"}},
		{"edge change", cdc.Change{Op: cdc.OpUpdate, Rel: edgeRel, Index: 7, New: cdc.Row{txt(m1), txt("image"), txt("asset"), txt("icp-canister"), txt("migrating")}},
			want{subjects: []string{"es.edge.icp-canister.updated"}, ids: []string{"slot/0/16b3748/7"}}},
		{"edge without key columns", cdc.Change{Op: cdc.OpDelete, Rel: edgeRel, Index: 8, Old: cdc.Row{null}},
			want{problem: "replica identity"}},
		{"gallery item", cdc.Change{Op: cdc.OpInsert, Rel: items, Index: 9, New: cdc.Row{txt(g1), txt(m1)}},
			want{galleries: []string{g1}}},
		{"table edgesync does not handle", cdc.Change{Op: cdc.OpInsert, Rel: other, Index: 10, New: cdc.Row{txt("1")}},
			want{}},
		{"truncate of two memory tables, gallery items and edges", cdc.Change{Op: cdc.OpTruncate, Index: 11, Truncated: []*cdc.Relation{images, notes, items, edgeRel}},
			want{truncates: []string{"image", "note"}, subjects: []string{"es.memory.image.truncated", "es.memory.note.truncated"},
				ids: []string{"slot/0/16b3748/11", "slot/0/16b3748/11.1"}, all: true}},
	}
	r := NewRouter(RouterConfig{Slot: "slot", SubjectPrefix: "es", Tables: []domain.Table{
		{Name: "images", MemoryType: "image", URLColumn: "url", SizeColumn: "size_bytes"},
		{Name: "app.notes", MemoryType: "note"},
	}})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ch := c.ch
			out := r.Route(txn, &ch)
			if !equalOps(out.Edges, c.want.edges) {
				t.Errorf("edges = %s, want %s", fmtOps(out.Edges), fmtOps(c.want.edges))
			}
			if strings.Join(out.Truncates, ",") != strings.Join(c.want.truncates, ",") {
				t.Errorf("truncates = %v, want %v", out.Truncates, c.want.truncates)
			}
			var subjects, ids []string
			for _, ev := range out.Events {
				subjects, ids = append(subjects, ev.Subject), append(ids, ev.ID)
				var env cdc.Event
				if err := json.Unmarshal(ev.Data, &env); err != nil {
					t.Fatalf("event %s is not JSON: %v\n%s", ev.ID, err, ev.Data)
				}
				if env.ID != ev.ID || env.Source.Xid != 7 || env.Source.CommitLSN != "0/16b3748" {
					t.Errorf("envelope %+v does not match id %s / txn", env, ev.ID)
				}
			}
			if strings.Join(subjects, ",") != strings.Join(c.want.subjects, ",") || strings.Join(ids, ",") != strings.Join(c.want.ids, ",") {
				t.Errorf("events = %v %v, want %v %v", subjects, ids, c.want.subjects, c.want.ids)
			}
			if strings.Join(out.Galleries, ",") != strings.Join(c.want.galleries, ",") || out.AllGalleries != c.want.all {
				t.Errorf("galleries = %v all=%v, want %v all=%v", out.Galleries, out.AllGalleries, c.want.galleries, c.want.all)
			}
			if (c.want.problem == "") != (out.Problem == "") || !strings.Contains(out.Problem, c.want.problem) {
				t.Errorf("problem = %q, want one containing %q", out.Problem, c.want.problem)
			}
		})
	}
}

func TestRouter_EdgeEventForHooks(t *testing.T) {
	r := NewRouter(RouterConfig{Slot: "s", SubjectPrefix: "p", Tables: domain.DefaultTables()})
	ch := cdc.Change{Op: cdc.OpUpdate, Rel: edgeRel, New: cdc.Row{txt(m1), txt("image"), txt("metadata"), txt("icp-canister"), txt("migrating")}}
	out := r.Route(&cdc.Txn{CommitLSN: 1}, &ch)
	if len(out.Events) != 1 || out.Events[0].Edge == nil {
		t.Fatalf("events = %+v", out.Events)
	}
	ev := out.Events[0].Edge
	if ev.MemoryID != m1 || ev.Backend != domain.BackendICP || ev.Artifact != domain.ArtifactMetadata || ev.SyncState != domain.SyncMigrating || string(ev.Data) != string(out.Events[0].Data) {
		t.Errorf("edge event = %+v", ev)
	}
}

// A row too big for one NATS message keeps its small columns and names the
// big ones instead of wedging the pipeline.
func TestRouter_OversizedRow(t *testing.T) {
	r := NewRouter(RouterConfig{Slot: "s", SubjectPrefix: "p", Tables: []domain.Table{{Name: "app.notes", MemoryType: "note"}}, MaxBody: 64 << 10})
	big := strings.Repeat("x", 200<<10)
	ch := cdc.Change{Op: cdc.OpInsert, Rel: notes, New: cdc.Row{txt(m2), txt(big)}}
	out := r.Route(&cdc.Txn{CommitLSN: 1}, &ch)
	if len(out.Events) != 1 || len(out.Events[0].Data) > 64<<10 {
		t.Fatalf("event of %d bytes", len(out.Events[0].Data))
	}
	var env cdc.Event
	if err := json.Unmarshal(out.Events[0].Data, &env); err != nil || len(env.Oversized) != 1 || env.Oversized[0] != "body" {
		t.Errorf("oversized = %v (%v)", env.Oversized, err)
	}
}

// A new Relation message for the same table replaces the cached one, so the
// cache does not grow with schema changes and new columns are seen.
func TestRouter_RelationReplaced(t *testing.T) {
	r := NewRouter(RouterConfig{Slot: "s", SubjectPrefix: "p", Tables: domain.DefaultTables()})
	for i := 0; i < 100; i++ {
		rel := cdc.NewRelation(9, "public", "images", cdc.Column{Name: "id", OID: oidUUID}, cdc.Column{Name: "url", OID: oidText})
		ch := cdc.Change{Op: cdc.OpInsert, Rel: rel, New: cdc.Row{txt(m1), txt("https://b/y")}}
		out := r.Route(&cdc.Txn{CommitLSN: 1}, &ch)
		if len(out.Edges) != 1 || out.Edges[0].URL == nil || *out.Edges[0].URL != "https://b/y" {
			t.Fatalf("edges = %s", fmtOps(out.Edges))
		}
	}
	if len(r.rels) != 1 {
		t.Errorf("relation cache holds %d entries for one table", len(r.rels))
	}
}

func equalOps(a, b []edges.Op) bool { return fmtOps(a) == fmtOps(b) }

func fmtOps(ops []edges.Op) string {
	var sb strings.Builder
	for _, o := range ops {
		sb.WriteString(o.MemoryID[:4] + "/" + o.MemoryType)
		if o.Delete {
			sb.WriteString(" delete")
		}
		if o.URLKnown {
			sb.WriteString(" url=")
			if o.URL != nil {
				sb.WriteString(*o.URL)
			} else {
				sb.WriteString("null")
			}
		}
		if o.Size != nil {
			sb.WriteString(" size=" + strconv.FormatInt(*o.Size, 10))
		}
		sb.WriteString("; ")
	}
	return sb.String()
}

// With the tables split over two pipelines, each publishes the edge events
// of the memory types it maps: every edge event once between them.
func TestRouter_EdgeEventsOfOwnTypesOnly(t *testing.T) {
	a := NewRouter(RouterConfig{Slot: "a", SubjectPrefix: "p", Tables: []domain.Table{{Name: "images", MemoryType: "image", URLColumn: "url"}}})
	b := NewRouter(RouterConfig{Slot: "b", SubjectPrefix: "p", Tables: []domain.Table{{Name: "app.notes", MemoryType: "note"}}})
	published := map[string]int{}
	for _, typ := range []string{"image", "note"} {
		for _, r := range []*Router{a, b} {
			ch := cdc.Change{Op: cdc.OpInsert, Rel: edgeRel, New: cdc.Row{txt(m1), txt(typ), txt("metadata"), txt("neon-db"), txt("idle")}}
			for _, ev := range r.Route(&cdc.Txn{CommitLSN: 1}, &ch).Events {
				published[typ+" by "+ev.ID[:1]]++
			}
		}
	}
	want := map[string]int{"image by a": 1, "note by b": 1}
	if len(published) != len(want) || published["image by a"] != 1 || published["note by b"] != 1 {
		t.Errorf("edge events published %v, want %v", published, want)
	}
}
