package pipeline

import (
	"context"
	"fmt"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/sinks/edges"
	natssink "github.com/edgesync/edgesync/sinks/nats"
	"github.com/prometheus/client_golang/prometheus"
)

// edgeSink takes edge operations; each is durable when its Pending is done.
type edgeSink interface {
	Add(ctx context.Context, op edges.Op, p *cdc.Pending) error
	AddTruncate(ctx context.Context, memoryType string, p *cdc.Pending) error
}

// eventSink takes messages; each is durable when its Pending is done.
type eventSink interface {
	// Publish sends m; messages of one key (a memory id) are stored in
	// the order given, also across failures.
	Publish(ctx context.Context, key string, m *natsgo.Msg, p *cdc.Pending) error
}

var (
	_ edgeSink  = (*edges.Batcher)(nil)
	_ eventSink = (*natssink.Publisher)(nil)
)

// consumer hands each routed change to the sinks. It runs on one goroutine.
type consumer struct {
	p       *Pipeline
	router  *Router
	edges   edgeSink
	events  eventSink
	tracker *cdc.Tracker
	pend    *cdc.Pending
}

func (p *Pipeline) consume(ctx context.Context, items <-chan cdc.Item, tr *cdc.Tracker, queue *cdc.Budget, es edgeSink, ev eventSink) error {
	maxBody := int(p.js.Conn().MaxPayload()) - 4096
	rc := p.routerConfig()
	rc.MaxBody = maxBody
	rc.Counter = func(table, op string) prometheus.Counter { return p.metrics.Events.WithLabelValues(table, op) }
	r := NewRouter(rc)
	c := &consumer{p: p, router: r, edges: es, events: ev, tracker: tr}
	for {
		select {
		case <-ctx.Done():
			return nil
		case it := <-items:
			err := c.item(ctx, it)
			queue.Release(it.Bytes) // routed: the events hold their own bytes now
			if err != nil {
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

func (c *consumer) change(ctx context.Context, txn *cdc.Txn, ch *cdc.Change) error {
	out := c.router.Route(txn, ch)
	log, hooks := c.p.log, &c.p.hooks
	if out.Problem != "" {
		log.Error(out.Problem, zap.String("table", ch.Rel.Qualified()), zap.String("op", ch.Op.String()))
	}
	for _, op := range out.Edges {
		if err := c.edges.Add(ctx, op, c.pend); err != nil {
			return err
		}
	}
	for _, typ := range out.Truncates {
		if err := c.edges.AddTruncate(ctx, typ, c.pend); err != nil {
			return err
		}
	}
	for _, ev := range out.Events {
		if err := c.events.Publish(ctx, ev.Key, natssink.Message(ev.Subject, ev.ID, ev.Data), c.pend); err != nil {
			return err
		}
		if ev.Edge != nil && hooks.EdgeChanged != nil {
			hooks.EdgeChanged(*ev.Edge)
		}
	}
	if hooks.GalleryChanged != nil {
		for _, g := range out.Galleries {
			hooks.GalleryChanged(g)
		}
		if out.AllGalleries {
			hooks.GalleryChanged("")
		}
	}
	if out.EdgesTruncated {
		log.Warn("storage_edges was truncated; run `edgesync reconcile` to rebuild the web2 edges (ICP edges are gone too)")
	}
	return nil
}
