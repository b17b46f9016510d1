package cdc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"
)

// Kind says what an Item carries.
type Kind uint8

// Item kinds, in the order a transaction streams.
const (
	KindBegin Kind = iota + 1
	KindChange
	KindCommit
)

// Item is what the reader hands to the consumer: a transaction boundary or a
// change, in commit order.
type Item struct {
	Kind   Kind
	Txn    *Txn
	Change *Change
	// Bytes is what the item holds of the reader's budget; the consumer
	// releases it (ReaderConfig.Budget) once it has routed the item.
	Bytes int64
}

// ReaderConfig configures a Reader.
type ReaderConfig struct {
	Slot        string
	Publication string
	// StatusInterval is how often a standby status update is sent, also while
	// the consumer is slow; keep it well under wal_sender_timeout.
	StatusInterval time.Duration
	// Budget bounds the bytes of changes handed to the consumer and not yet
	// released by it (nil: unbounded; the channel's length still bounds the
	// count).
	Budget *Budget
}

// Reader owns one replication connection: it streams pgoutput (protocol 1,
// with messages), decodes it, keeps the relation cache and reports the
// tracker's confirmed position. Only its Run goroutine touches the connection.
type Reader struct {
	cfg       ReaderConfig
	conn      *pgconn.PgConn
	tracker   *Tracker
	log       *zap.Logger
	relations map[uint32]*Relation

	sent     LSN // flush position last reported
	sentAt   time.Time
	received LSN  // highest WAL position received
	walEnd   LSN  // server WAL end from the latest keepalive
	inTxn    bool // between Begin and Commit
	txn      *Txn
	index    int
	next     time.Time
}

// NewReader wraps a connection opened with replication=database.
func NewReader(cfg ReaderConfig, conn *pgconn.PgConn, tracker *Tracker, log *zap.Logger) *Reader {
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = 3 * time.Second
	}
	return &Reader{cfg: cfg, conn: conn, tracker: tracker, log: log, relations: map[uint32]*Relation{}}
}

// Run starts replication at start (0 means the slot's confirmed position;
// never pass a position above it) and sends items to out until ctx ends or the
// stream fails. It does not close out.
func (r *Reader) Run(ctx context.Context, start LSN, out chan<- Item) error {
	err := pglogrepl.StartReplication(ctx, r.conn, r.cfg.Slot, start, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + r.cfg.Publication + "'", "messages 'true'"},
	})
	if err != nil {
		return fmt.Errorf("start replication on slot %s: %w", r.cfg.Slot, err)
	}
	r.next = time.Now().Add(r.cfg.StatusInterval)
	// One watcher for the whole session instead of a context per message
	// (a deadline context and pgconn's watcher for each one cost an eighth
	// of the daemon's CPU while it caught up): every receive runs with the
	// connection's read deadline set to when the loop must wake up, and the
	// end of ctx moves that deadline into the past.
	nc := r.conn.Conn()
	stop := context.AfterFunc(ctx, func() { _ = nc.SetReadDeadline(time.Unix(1, 0)) })
	defer func() {
		if stop() {
			_ = nc.SetReadDeadline(time.Time{})
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		now := time.Now()
		// Report the durable prefix as soon as it moves (at most every
		// confirmEvery), not only every StatusInterval: the shorter the gap
		// between what JetStream stored and what the slot confirmed, the
		// shorter a replay after a crash.
		if !now.Before(r.next) || r.tracker.Confirmed() > r.sent && now.Sub(r.sentAt) >= confirmEvery {
			if err := r.sendStatus(ctx); err != nil {
				return err
			}
		}
		until := r.next
		if r.tracker.InFlight() > 0 {
			// Work is in flight: wake up to report its confirmation even
			// if the server sends nothing meanwhile.
			if soon := now.Add(confirmEvery); soon.Before(until) {
				until = soon
			}
		} else if r.tracker.Confirmed() > r.sent {
			// A confirmation moved within confirmEvery of the last report
			// (the last transaction, or a keepalive's WAL end): report it
			// when that gap has passed, not a whole StatusInterval later.
			if soon := r.sentAt.Add(confirmEvery); soon.Before(until) {
				until = soon
			}
		}
		if err := nc.SetReadDeadline(until); err != nil {
			return fmt.Errorf("receive from slot %s: %w", r.cfg.Slot, err)
		}
		if err := ctx.Err(); err != nil {
			// Ended after the check above: its watcher may have set the
			// deadline before this loop set its own.
			return err
		}
		raw, err := r.conn.ReceiveMessage(context.Background())
		if err != nil {
			if pgconn.Timeout(err) && ctx.Err() == nil {
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("receive from slot %s: %w", r.cfg.Slot, err)
		}
		switch m := raw.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				continue
			}
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				k, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return fmt.Errorf("parse keepalive: %w", err)
				}
				if k.ServerWALEnd > r.walEnd {
					r.walEnd = k.ServerWALEnd
				}
				if !r.inTxn {
					r.tracker.idle(r.walEnd)
				}
				if k.ReplyRequested {
					r.next = time.Time{}
				}
			case pglogrepl.XLogDataByteID:
				x, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return fmt.Errorf("parse xlogdata: %w", err)
				}
				// The position of a logical message is its WALStart (a
				// commit's is the transaction's end), as pg_recvlogical
				// reports it; adding the message's length would report a
				// write position past the walsender's own, and it sends
				// the keepalive that carries its WAL end to an idle client
				// only while the client's write position is behind it.
				if x.WALStart > r.received {
					r.received = x.WALStart
				}
				if err := r.handle(ctx, x, out); err != nil {
					return err
				}
			}
		default:
			// Notices and the like: nothing to do.
		}
	}
}

func (r *Reader) sendStatus(ctx context.Context) error {
	c := r.tracker.Confirmed()
	write := r.received
	if c > write {
		write = c
	}
	// Flush and apply are always set explicitly: pglogrepl would fill a
	// zero flush with the write position, confirming what is not durable.
	err := pglogrepl.SendStandbyStatusUpdate(ctx, r.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: write, WALFlushPosition: c, WALApplyPosition: c, ClientTime: time.Now(),
	})
	if err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	r.sent, r.sentAt = c, time.Now()
	r.next = r.sentAt.Add(r.cfg.StatusInterval)
	return nil
}

// confirmEvery bounds how often a moved durable prefix is reported.
const confirmEvery = 50 * time.Millisecond

// emit hands an item to the consumer, still sending status updates while the
// consumer is slow so the walsender does not time out.
func (r *Reader) emit(ctx context.Context, it Item, out chan<- Item) error {
	if b := r.cfg.Budget; b != nil && it.Change != nil {
		it.Bytes = it.Size()
		for !b.TryAcquire(it.Bytes) {
			actx, cancel := context.WithDeadline(ctx, r.next)
			err := b.Acquire(actx, it.Bytes)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err := r.sendStatus(ctx); err != nil { // the consumer is slow: keep the session alive
				return err
			}
		}
	}
	select {
	case out <- it:
		return nil
	default:
	}
	for {
		wait := time.Until(r.next)
		if wait < 0 {
			wait = 0
		}
		t := time.NewTimer(wait)
		select {
		case out <- it:
			t.Stop()
			return nil
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
			if err := r.sendStatus(ctx); err != nil {
				return err
			}
		}
	}
}

// ErrProtocol marks a stream the reader cannot make sense of.
var ErrProtocol = errors.New("unexpected replication message")

func (r *Reader) handle(ctx context.Context, x pglogrepl.XLogData, out chan<- Item) error {
	msg, err := pglogrepl.Parse(x.WALData)
	if err != nil {
		return fmt.Errorf("decode pgoutput message: %w", err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		r.relations[m.RelationID] = newRelation(m)
	case *pglogrepl.TypeMessage, *pglogrepl.LogicalDecodingMessage:
		// Types: enums and domains arrive as text and are encoded as strings.
		// Messages: heartbeats; their transaction still begins and commits.
	case *pglogrepl.OriginMessage:
		if r.txn != nil {
			r.txn.Origin = m.Name
		}
	case *pglogrepl.BeginMessage:
		if r.inTxn {
			return fmt.Errorf("%w: begin inside a transaction", ErrProtocol)
		}
		r.inTxn, r.index = true, 0
		r.txn = &Txn{Xid: m.Xid, CommitLSN: m.FinalLSN, CommitTime: m.CommitTime}
		r.tracker.received()
		return r.emit(ctx, Item{Kind: KindBegin, Txn: r.txn}, out)
	case *pglogrepl.CommitMessage:
		if !r.inTxn {
			return fmt.Errorf("%w: commit outside a transaction", ErrProtocol)
		}
		r.txn.End = m.TransactionEndLSN
		txn := r.txn
		r.inTxn, r.txn = false, nil
		return r.emit(ctx, Item{Kind: KindCommit, Txn: txn}, out)
	case *pglogrepl.InsertMessage:
		return r.change(ctx, out, OpInsert, m.RelationID, nil, m.Tuple, x.WALStart)
	case *pglogrepl.UpdateMessage:
		return r.change(ctx, out, OpUpdate, m.RelationID, m.OldTuple, m.NewTuple, x.WALStart)
	case *pglogrepl.DeleteMessage:
		return r.change(ctx, out, OpDelete, m.RelationID, m.OldTuple, nil, x.WALStart)
	case *pglogrepl.TruncateMessage:
		if !r.inTxn {
			return fmt.Errorf("%w: truncate outside a transaction", ErrProtocol)
		}
		c := &Change{Op: OpTruncate, LSN: x.WALStart, Index: r.index}
		r.index++
		for _, id := range m.RelationIDs {
			rel, ok := r.relations[id]
			if !ok {
				return fmt.Errorf("%w: truncate of unknown relation %d", ErrProtocol, id)
			}
			c.Truncated = append(c.Truncated, rel)
		}
		return r.emit(ctx, Item{Kind: KindChange, Txn: r.txn, Change: c}, out)
	default:
		return fmt.Errorf("%w: %T", ErrProtocol, msg)
	}
	return nil
}

func (r *Reader) change(ctx context.Context, out chan<- Item, op Op, relID uint32, old, new *pglogrepl.TupleData, lsn LSN) error {
	if !r.inTxn {
		return fmt.Errorf("%w: %s outside a transaction", ErrProtocol, op)
	}
	rel, ok := r.relations[relID]
	if !ok {
		return fmt.Errorf("%w: %s of unknown relation %d", ErrProtocol, op, relID)
	}
	c := &Change{Op: op, Rel: rel, Old: rowOf(old), New: rowOf(new), LSN: lsn, Index: r.index}
	r.index++
	if len(c.New) > len(rel.Columns) || len(c.Old) > len(rel.Columns) {
		return fmt.Errorf("%w: %s row of %s has more columns than its relation", ErrProtocol, op, rel.Qualified())
	}
	return r.emit(ctx, Item{Kind: KindChange, Txn: r.txn, Change: c}, out)
}

// SendFinalStatus reports the tracker's confirmed position once more after Run
// has returned (on shutdown, after the sinks drained).
func (r *Reader) SendFinalStatus(ctx context.Context) error {
	return r.sendStatus(ctx)
}
