package daemon

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/sinks/edges"
	natssink "github.com/edgesync/edgesync/sinks/nats"
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
	kind  relKind
	table config.Table
	id    int // memory tables: id; edges: memory_id; gallery_items: gallery_id
	url   int
	size  int
	// storage_edges columns
	memType, backend, artifact, syncState int
	// events counts the relation's changes by op, resolved once so the hot
	// path does no label lookup.
	events [cdc.OpTruncate + 1]prometheus.Counter
}

func (p *Pipeline) resolve(rel *cdc.Relation) *relInfo {
	q := rel.Qualified()
	switch {
	case q == "public.storage_edges":
		return &relInfo{kind: relEdges, id: rel.Col("memory_id"), memType: rel.Col("memory_type"),
			backend: rel.Col("backend"), artifact: rel.Col("artifact"), syncState: rel.Col("sync_state")}
	case q == "public.gallery_items":
		return &relInfo{kind: relGalleryItems, id: rel.Col("gallery_id")}
	}
	t, ok := p.tables[q]
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

// consumer turns items into edge writes and events. It runs on one goroutine.
type consumer struct {
	p       *Pipeline
	batcher *edges.Batcher
	pub     *natssink.Publisher
	tracker *cdc.Tracker
	rels    map[*cdc.Relation]*relInfo
	pend    *cdc.Pending
	buf     []byte
	id      []byte
	maxBody int // NATS max_payload less room for headers
}

func (p *Pipeline) consume(ctx context.Context, items <-chan cdc.Item, tr *cdc.Tracker, b *edges.Batcher, pub *natssink.Publisher) error {
	c := &consumer{p: p, batcher: b, pub: pub, tracker: tr, rels: map[*cdc.Relation]*relInfo{}, maxBody: int(p.nc.MaxPayload()) - 4096}
	if c.maxBody <= 0 {
		c.maxBody = 1<<20 - 4096
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case it := <-items:
			if err := c.item(ctx, it); err != nil {
				return err
			}
		}
	}
}

func (c *consumer) item(ctx context.Context, it cdc.Item) error {
	switch it.Kind {
	case cdc.KindBegin:
		c.pend = c.tracker.Open()
	case cdc.KindCommit:
		c.p.metrics.DecodeLag.Observe(time.Since(it.Txn.CommitTime).Seconds())
		c.pend.Seal(it.Txn.End)
		c.pend = nil
	case cdc.KindChange:
		if c.pend == nil {
			return fmt.Errorf("%w: change before begin", cdc.ErrProtocol)
		}
		return c.change(ctx, it.Txn, it.Change)
	}
	return nil
}

func (c *consumer) info(rel *cdc.Relation) *relInfo {
	ri, ok := c.rels[rel]
	if !ok {
		ri = c.p.resolve(rel)
		for op := cdc.OpInsert; op <= cdc.OpTruncate; op++ {
			ri.events[op] = c.p.metrics.Events.WithLabelValues(rel.Name, op.String())
		}
		c.rels[rel] = ri
	}
	return ri
}

func (c *consumer) change(ctx context.Context, txn *cdc.Txn, ch *cdc.Change) error {
	if ch.Op == cdc.OpTruncate {
		return c.truncate(ctx, txn, ch)
	}
	ri := c.info(ch.Rel)
	ri.events[ch.Op].Inc()
	ch.MergeUnchanged()
	switch ri.kind {
	case relMemory:
		return c.memory(ctx, txn, ch, ri)
	case relEdges:
		return c.edge(ctx, txn, ch, ri)
	case relGalleryItems:
		if c.p.hooks.GalleryChanged != nil {
			row := ch.New
			if row == nil {
				row = ch.Old
			}
			if g, ok := row.Text(ri.id); ok {
				c.p.hooks.GalleryChanged(g)
			}
		}
	default:
		if ce := c.p.log.Check(zap.DebugLevel, "skipping change of a table edgesync does not handle"); ce != nil {
			ce.Write(zap.String("table", ch.Rel.Qualified()))
		}
	}
	return nil
}

func (c *consumer) msgID(txn *cdc.Txn, index int, suffix string) string {
	c.id = cdc.MsgID(c.id[:0], c.p.cfg.Slot, txn.CommitLSN, index)
	if suffix != "" {
		c.id = append(c.id, suffix...)
	}
	return string(c.id)
}

func (c *consumer) memory(ctx context.Context, txn *cdc.Txn, ch *cdc.Change, ri *relInfo) error {
	row := ch.New
	if ch.Op == cdc.OpDelete {
		row = ch.Old
	}
	id, ok := row.Text(ri.id)
	if !ok {
		c.p.log.Error("memory row without an id: edges not updated", zap.String("table", ch.Rel.Qualified()), zap.String("op", ch.Op.String()))
		return nil
	}
	typ := ri.table.MemoryType
	if ch.Op == cdc.OpUpdate && ch.Old != nil {
		// The primary key changed: the old memory is gone.
		if oldID, ok := ch.Old.Text(ri.id); ok && oldID != id {
			if err := c.batcher.Add(ctx, edges.Op{MemoryID: oldID, MemoryType: typ, Delete: true}, c.pend); err != nil {
				return err
			}
		}
	}
	op := edges.Op{MemoryID: id, MemoryType: typ, Delete: ch.Op == cdc.OpDelete}
	if !op.Delete && ri.url >= 0 {
		op.URL, op.Size, op.URLKnown = assetOf(row, ri)
	}
	if err := c.batcher.Add(ctx, op, c.pend); err != nil {
		return err
	}
	msgID := c.msgID(txn, ch.Index, "")
	c.event(cdc.EventHeader{
		ID: msgID, Op: cdc.EventOp(ch.Op), MemoryID: id, MemoryType: typ,
		Table: ch.Rel.Qualified(), LSN: ch.LSN, Txn: txn,
	}, ch)
	subject := c.p.cfg.SubjectPrefix + ".memory." + typ + "." + cdc.EventOp(ch.Op)
	return c.publish(ctx, subject, msgID, c.buf)
}

// oversizedValue is the largest column value kept in an event whose row does
// not fit NATS' max_payload as a whole.
const oversizedValue = 16 << 10

// event encodes a change's envelope into c.buf. A row too big for one NATS
// message (a huge TOASTed column) is sent without its biggest values, named
// in oversized_columns, rather than failing the pipeline forever.
func (c *consumer) event(h cdc.EventHeader, ch *cdc.Change) {
	now := time.Now()
	c.buf = cdc.AppendEvent(c.buf[:0], h, ch.Rel, ch.Old, ch.New, now)
	if len(c.buf) > c.maxBody {
		h.MaxValue = oversizedValue
		c.buf = cdc.AppendEvent(c.buf[:0], h, ch.Rel, ch.Old, ch.New, now)
	}
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

func (c *consumer) publish(ctx context.Context, subject, id string, data []byte) error {
	body := make([]byte, len(data))
	copy(body, data)
	return c.pub.Publish(ctx, natssink.Message(subject, id, body), c.pend)
}

func (c *consumer) edge(ctx context.Context, txn *cdc.Txn, ch *cdc.Change, ri *relInfo) error {
	row := ch.New
	if ch.Op == cdc.OpDelete {
		row = ch.Old
	}
	memID, _ := row.Text(ri.id)
	memType, _ := row.Text(ri.memType)
	backend, _ := row.Text(ri.backend)
	artifact, _ := row.Text(ri.artifact)
	if memID == "" || backend == "" {
		c.p.log.Error("storage_edges change without its key columns; check its replica identity", zap.String("op", ch.Op.String()))
		return nil
	}
	id := c.msgID(txn, ch.Index, "")
	c.event(cdc.EventHeader{
		ID: id, Op: cdc.EventOp(ch.Op), MemoryID: memID, MemoryType: memType, Backend: backend, Artifact: artifact,
		Table: ch.Rel.Qualified(), LSN: ch.LSN, Txn: txn,
	}, ch)
	body := make([]byte, len(c.buf))
	copy(body, c.buf)
	subject := c.p.cfg.SubjectPrefix + ".edge." + backend + "." + cdc.EventOp(ch.Op)
	if err := c.pub.Publish(ctx, natssink.Message(subject, id, body), c.pend); err != nil {
		return err
	}
	if c.p.hooks.EdgeChanged != nil {
		ev := EdgeEvent{ID: id, Data: body, Op: ch.Op, MemoryID: memID, MemoryType: memType, Backend: backend, Artifact: artifact}
		if ch.New != nil {
			ev.SyncState, _ = ch.New.Text(ri.syncState)
		}
		c.p.hooks.EdgeChanged(ev)
	}
	return nil
}

func (c *consumer) truncate(ctx context.Context, txn *cdc.Txn, ch *cdc.Change) error {
	n := 0
	for _, rel := range ch.Truncated {
		ri := c.info(rel)
		ri.events[cdc.OpTruncate].Inc()
		switch ri.kind {
		case relMemory:
			typ := ri.table.MemoryType
			if err := c.batcher.AddTruncate(ctx, typ, c.pend); err != nil {
				return err
			}
			suffix := ""
			if n > 0 {
				suffix = "." + strconv.Itoa(n)
			}
			n++
			msgID := c.msgID(txn, ch.Index, suffix)
			c.buf = cdc.AppendEvent(c.buf[:0], cdc.EventHeader{
				ID: msgID, Op: cdc.EventTruncated, MemoryType: typ,
				Table: rel.Qualified(), LSN: ch.LSN, Txn: txn,
			}, nil, nil, nil, time.Now())
			if err := c.publish(ctx, c.p.cfg.SubjectPrefix+".memory."+typ+"."+cdc.EventTruncated, msgID, c.buf); err != nil {
				return err
			}
		case relGalleryItems:
			if c.p.hooks.GalleryChanged != nil {
				c.p.hooks.GalleryChanged("")
			}
		case relEdges:
			c.p.log.Warn("storage_edges was truncated; run `edgesync reconcile` to rebuild the web2 edges (ICP edges are gone too)")
		}
	}
	return nil
}
