package pipeline

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/sinks/edges"
)

// relKind is what the pipeline does with a relation's changes.
type relKind uint8

const (
	relOther relKind = iota
	relMemory
	relEdges
	relGalleryItems
)

// relInfo resolves a relation's columns once per Relation message.
type relInfo struct {
	rel   *cdc.Relation // the Relation message this was resolved from
	kind  relKind
	table domain.Table
	id    int // memory tables: id; edges: memory_id; gallery_items: gallery_id
	url   int
	size  int
	// storage_edges columns
	memType, backend, artifact, syncState int
	// events counts the relation's changes by op, resolved once so the hot
	// path does no label lookup (nil counters: not counted).
	events [cdc.OpTruncate + 1]prometheus.Counter
}

// Event is one message the router produced: its subject, Nats-Msg-Id and
// JSON envelope (a fresh slice the caller may keep).
type Event struct {
	Subject string
	ID      string
	Data    []byte
	// Key orders the events of one memory (its id; "" for a truncate).
	Key string
	// Edge is set for storage_edges events (for the hooks).
	Edge *EdgeEvent
}

// Output is what one decoded change becomes. Its slices are reused by the
// next Route call.
type Output struct {
	Edges     []edges.Op
	Truncates []string // memory types whose table was truncated
	Events    []Event
	// Galleries whose items changed; AllGalleries after a truncate of
	// gallery_items.
	Galleries    []string
	AllGalleries bool
	// Problem, when set, is why the change was only partly handled (an odd
	// row); the consumer logs it.
	Problem string
	// EdgesTruncated is set when storage_edges itself was truncated.
	EdgesTruncated bool
}

func (o *Output) reset() {
	o.Edges, o.Truncates, o.Events, o.Galleries = o.Edges[:0], o.Truncates[:0], o.Events[:0], o.Galleries[:0]
	o.AllGalleries, o.Problem, o.EdgesTruncated = false, "", false
}

// Router turns decoded changes into edge operations and events: subject,
// message id and envelope. It is pure (no I/O), so the whole mapping of
// changes to effects is tested without Postgres or NATS.
type Router struct {
	slot     string
	subjects domain.Subjects
	tables   map[string]domain.Table // by schema-qualified name
	types    map[string]bool         // the memory types this pipeline owns
	edges    string                  // schema-qualified storage_edges
	items    string                  // schema-qualified gallery_items
	maxBody  int
	now      func() time.Time
	counter  func(table, op string) prometheus.Counter
	rels     map[uint32]*relInfo // by relation id: a new Relation message replaces the entry
	buf, id  []byte
	out      Output
}

// RouterConfig configures a Router.
type RouterConfig struct {
	Slot          string
	SubjectPrefix string
	Tables        []domain.Table
	// MaxBody is the largest envelope; larger rows lose their biggest values
	// (named in oversized_columns). 0: 1 MiB less room for headers.
	MaxBody int
	// Now stamps emitted_at (time.Now when nil).
	Now func() time.Time
	// Counter, when set, returns the per-table, per-op change counter.
	Counter func(table, op string) prometheus.Counter
	// EdgesTable and ItemsTable are storage_edges and gallery_items as
	// pgoutput names them ("schema.table", found on the search path);
	// empty: in the default schema.
	EdgesTable, ItemsTable string
}

// NewRouter returns a router.
func NewRouter(c RouterConfig) *Router {
	r := &Router{slot: c.Slot, subjects: domain.Subjects{Prefix: c.SubjectPrefix}, tables: map[string]domain.Table{},
		edges: domain.Qualify(domain.EdgesTable), items: domain.Qualify(domain.GalleryItemsTable),
		maxBody: c.MaxBody, now: c.Now, counter: c.Counter, rels: map[uint32]*relInfo{}}
	r.types = map[string]bool{}
	for _, t := range c.Tables {
		r.tables[t.Qualified()] = t
		r.types[t.MemoryType] = true
	}
	if c.EdgesTable != "" {
		r.edges = c.EdgesTable
	}
	if c.ItemsTable != "" {
		r.items = c.ItemsTable
	}
	if r.maxBody <= 0 {
		r.maxBody = 1<<20 - 4096
	}
	if r.now == nil {
		r.now = time.Now
	}
	return r
}

// Known reports whether a schema-qualified table is one the router handles.
func (r *Router) Known(qualified string) bool {
	_, ok := r.tables[qualified]
	return ok || qualified == r.edges || qualified == r.items
}

func (r *Router) info(rel *cdc.Relation) *relInfo {
	if ri, ok := r.rels[rel.ID]; ok && ri.rel == rel {
		return ri
	}
	ri := r.resolve(rel)
	ri.rel = rel
	if r.counter != nil {
		for op := cdc.OpInsert; op <= cdc.OpTruncate; op++ {
			ri.events[op] = r.counter(rel.Name, op.String())
		}
	}
	r.rels[rel.ID] = ri
	return ri
}

func (r *Router) resolve(rel *cdc.Relation) *relInfo {
	q := rel.Qualified()
	switch q {
	case r.edges:
		return &relInfo{kind: relEdges, id: rel.Col("memory_id"), memType: rel.Col("memory_type"),
			backend: rel.Col("backend"), artifact: rel.Col("artifact"), syncState: rel.Col("sync_state")}
	case r.items:
		return &relInfo{kind: relGalleryItems, id: rel.Col("gallery_id")}
	}
	t, ok := r.tables[q]
	if !ok {
		return &relInfo{kind: relOther}
	}
	ri := &relInfo{kind: relMemory, table: t, id: rel.Col("id"), url: -1, size: -1}
	if t.URLColumn != "" {
		ri.url = rel.Col(t.URLColumn)
	}
	if t.SizeColumn != "" {
		ri.size = rel.Col(t.SizeColumn)
	}
	return ri
}

// Route maps one change of txn to its effects. The result is valid until
// the next call.
func (r *Router) Route(txn *cdc.Txn, ch *cdc.Change) *Output {
	o := &r.out
	o.reset()
	if ch.Op == cdc.OpTruncate {
		r.truncate(o, txn, ch)
		return o
	}
	ri := r.info(ch.Rel)
	if c := ri.events[ch.Op]; c != nil {
		c.Inc()
	}
	ch.MergeUnchanged()
	switch ri.kind {
	case relMemory:
		r.memory(o, txn, ch, ri)
	case relEdges:
		r.edge(o, txn, ch, ri)
	case relGalleryItems:
		if g, ok := image(ch).Text(ri.id); ok {
			o.Galleries = append(o.Galleries, g)
		}
	}
	return o
}

// image is the row a change is about: the new row, or the old one of a delete.
func image(ch *cdc.Change) cdc.Row {
	if ch.Op == cdc.OpDelete || ch.New == nil {
		return ch.Old
	}
	return ch.New
}

func (r *Router) msgID(txn *cdc.Txn, index int, suffix string) string {
	r.id = cdc.MsgID(r.id[:0], r.slot, txn.CommitLSN, index)
	r.id = append(r.id, suffix...)
	return string(r.id)
}

func (r *Router) memory(o *Output, txn *cdc.Txn, ch *cdc.Change, ri *relInfo) {
	row := image(ch)
	id, ok := row.Text(ri.id)
	if !ok {
		o.Problem = "memory row without an id: edges not updated"
		return
	}
	typ := ri.table.MemoryType
	if ch.Op == cdc.OpUpdate && ch.Old != nil {
		// The primary key changed: the old memory is gone.
		if oldID, ok := ch.Old.Text(ri.id); ok && oldID != id {
			o.Edges = append(o.Edges, edges.Op{MemoryID: oldID, MemoryType: typ, Delete: true})
		}
	}
	op := edges.Op{MemoryID: id, MemoryType: typ, Delete: ch.Op == cdc.OpDelete}
	if !op.Delete && ri.url >= 0 {
		op.URL, op.Size, op.URLKnown = assetOf(row, ri)
	}
	o.Edges = append(o.Edges, op)
	msgID := r.msgID(txn, ch.Index, "")
	r.encode(cdc.EventHeader{
		ID: msgID, Op: cdc.EventOp(ch.Op), MemoryID: id, MemoryType: typ,
		Table: ch.Rel.Qualified(), LSN: ch.LSN, Txn: txn,
	}, ch)
	o.Events = append(o.Events, Event{Subject: r.subjects.Memory(typ, cdc.EventOp(ch.Op)), ID: msgID, Data: clone(r.buf), Key: id})
}

func (r *Router) edge(o *Output, txn *cdc.Txn, ch *cdc.Change, ri *relInfo) {
	row := image(ch)
	if !keyed(row, ri) {
		o.Problem = "storage_edges change without its key columns; check its replica identity"
		return
	}
	if t := row.Get(ri.memType); t.Kind != cdc.Text || !r.types[string(t.Data)] {
		// Another pipeline maps this memory type (several slots split the
		// tables): it publishes the edge events of its own types, so each
		// is published once. Checked before anything is copied out of the
		// row: with two pipelines, half of the edge changes end here.
		return
	}
	memID, _ := row.Text(ri.id)
	memType, _ := row.Text(ri.memType)
	backend, _ := row.Text(ri.backend)
	artifact, _ := row.Text(ri.artifact)
	id := r.msgID(txn, ch.Index, "")
	r.encode(cdc.EventHeader{
		ID: id, Op: cdc.EventOp(ch.Op), MemoryID: memID, MemoryType: memType, Backend: backend, Artifact: artifact,
		Table: ch.Rel.Qualified(), LSN: ch.LSN, Txn: txn,
	}, ch)
	ev := &EdgeEvent{ID: id, Op: ch.Op, MemoryID: memID, MemoryType: memType, Backend: backend, Artifact: artifact}
	if ch.New != nil {
		ev.SyncState, _ = ch.New.Text(ri.syncState)
	}
	ev.Data = clone(r.buf)
	o.Events = append(o.Events, Event{Subject: r.subjects.Edge(backend, cdc.EventOp(ch.Op)), ID: id, Data: ev.Data, Edge: ev, Key: memID})
}

// keyed reports whether an edge row image has the key columns an event
// needs (memory_id and backend as known, non-empty values).
func keyed(row cdc.Row, ri *relInfo) bool {
	id, b := row.Get(ri.id), row.Get(ri.backend)
	return id.Kind == cdc.Text && len(id.Data) > 0 && b.Kind == cdc.Text && len(b.Data) > 0
}

func (r *Router) truncate(o *Output, txn *cdc.Txn, ch *cdc.Change) {
	n := 0
	for _, rel := range ch.Truncated {
		ri := r.info(rel)
		if c := ri.events[cdc.OpTruncate]; c != nil {
			c.Inc()
		}
		switch ri.kind {
		case relMemory:
			typ := ri.table.MemoryType
			o.Truncates = append(o.Truncates, typ)
			suffix := ""
			if n > 0 {
				suffix = "." + strconv.Itoa(n)
			}
			n++
			msgID := r.msgID(txn, ch.Index, suffix)
			r.buf = cdc.AppendEvent(r.buf[:0], cdc.EventHeader{
				ID: msgID, Op: cdc.EventTruncated, MemoryType: typ,
				Table: rel.Qualified(), LSN: ch.LSN, Txn: txn,
			}, nil, nil, nil, r.now())
			o.Events = append(o.Events, Event{Subject: r.subjects.Memory(typ, cdc.EventTruncated), ID: msgID, Data: clone(r.buf)})
		case relGalleryItems:
			o.AllGalleries = true
		case relEdges:
			o.EdgesTruncated = true
		}
	}
}

// oversizedValue is the largest column value kept in an event whose row does
// not fit NATS' max_payload as a whole.
const oversizedValue = 16 << 10

// encode writes a change's envelope into r.buf. A row too big for one NATS
// message (a huge TOASTed column) is sent without its biggest values, named
// in oversized_columns, rather than failing the pipeline forever.
func (r *Router) encode(h cdc.EventHeader, ch *cdc.Change) {
	now := r.now()
	r.buf = cdc.AppendEvent(r.buf[:0], h, ch.Rel, ch.Old, ch.New, now)
	if len(r.buf) > r.maxBody {
		h.MaxValue = oversizedValue
		r.buf = cdc.AppendEvent(r.buf[:0], h, ch.Rel, ch.Old, ch.New, now)
	}
}

func clone(b []byte) []byte {
	c := make([]byte, len(b))
	copy(c, b)
	return c
}

// assetOf reads a memory row's asset URL and size. known is false when the
// URL is an unchanged TOAST value the change did not carry.
func assetOf(row cdc.Row, ri *relInfo) (url *string, size *int64, known bool) {
	if sv := row.Get(ri.size); sv.Kind == cdc.Text {
		if n, err := strconv.ParseInt(string(sv.Data), 10, 64); err == nil && n >= 0 {
			size = &n
		}
	}
	switch v := row.Get(ri.url); v.Kind {
	case cdc.Text:
		s := string(v.Data)
		return &s, size, true
	case cdc.Unchanged:
		return nil, size, false
	}
	return nil, size, true
}
