package pipeline

import (
	"context"
	"strings"
	"time"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/sinks/edges"
	natssink "github.com/edgesync/edgesync/sinks/nats"
)

// ownPrefix is the prefix of the logical message that marks this slot's own
// edge writes.
func (p *Pipeline) ownPrefix() string { return "edgesync.own." + p.cfg.Slot }

// ownWriter publishes the edge events of the daemon's own edge writes from
// the rows the write returned, instead of from the slot.
type ownWriter struct {
	p        *Pipeline
	w        *edges.Writer
	pub      *natssink.Publisher
	subjects domain.Subjects
	rel      *cdc.Relation
	buf      []byte
}

func (o *ownWriter) written(ctx context.Context, wr edges.Written, pending func(id, typ string) *cdc.Pending) error {
	if o.rel == nil {
		cols, err := o.w.Columns(ctx)
		if err != nil {
			return err
		}
		schema, name, _ := strings.Cut(o.p.edgesTable, ".")
		o.rel = cdc.NewRelation(0, schema, name, cols...)
	}
	now := time.Now()
	txn := &cdc.Txn{Xid: wr.Xid, CommitLSN: wr.Anchor, CommitTime: now}
	seen := map[string]int{}
	for _, c := range wr.Changes {
		k := c.MemoryID + "." + c.Artifact + "." + c.Backend
		id := o.p.cfg.Slot + "/" + wr.Anchor.String() + "/" + k
		if n := seen[k]; n > 0 {
			id += "." + itoa(n)
		}
		seen[k]++
		op := cdc.EventOp(c.Op)
		o.buf = cdc.AppendEvent(o.buf[:0], cdc.EventHeader{ID: id, Op: op, MemoryID: c.MemoryID, MemoryType: c.MemoryType,
			Backend: c.Backend, Artifact: c.Artifact, Table: o.p.edgesTable, LSN: wr.Anchor, Txn: txn}, o.rel, c.Before, c.After, now)
		data := clone(o.buf)
		if err := o.pub.Publish(ctx, c.MemoryID, natssink.Message(o.subjects.Edge(c.Backend, op), id, data), pending(c.MemoryID, c.MemoryType)); err != nil {
			return err
		}
		if h := o.p.hooks.EdgeChanged; h != nil {
			h(EdgeEvent{ID: id, Data: data, Op: c.Op, MemoryID: c.MemoryID, MemoryType: c.MemoryType, Backend: c.Backend, Artifact: c.Artifact, SyncState: c.SyncState})
		}
	}
	return nil
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + itoa(n%10)
}
