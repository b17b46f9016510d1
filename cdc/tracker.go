package cdc

import (
	"sync"
	"sync/atomic"

	"github.com/jackc/pglogrepl"
)

// LSN is a WAL position.
type LSN = pglogrepl.LSN

// Tracker keeps the transactions received from the slot in commit order and
// computes the confirmable LSN: the end of the longest fully durable prefix
// (rule A), or the server's WAL end when nothing is in flight (rule B).
type Tracker struct {
	mu sync.Mutex
	q  []*Pending
	// confirmed is written under mu and read without it (the reader checks
	// it on every message to report progress promptly).
	confirmed atomic.Uint64
	// inflight counts transactions the reader has seen begin and the tracker
	// has not yet confirmed, including those still queued between reader and
	// consumer. Zero means every received transaction is durable.
	inflight atomic.Int64
}

// NewTracker starts at the slot's confirmed_flush_lsn (never 0 after the slot
// exists).
func NewTracker(start LSN) *Tracker {
	t := &Tracker{}
	t.confirmed.Store(uint64(start))
	return t
}

// Pending is one transaction's outstanding durable effects.
type Pending struct {
	t       *Tracker
	end     LSN
	pending int
	sealed  bool
}

// received is called by the reader at Begin, before the transaction is
// handed to the consumer.
func (t *Tracker) received() { t.inflight.Add(1) }

// Open registers a transaction, in commit order, with one effect held open
// until Seal.
func (t *Tracker) Open() *Pending {
	p := &Pending{t: t}
	t.mu.Lock()
	t.q = append(t.q, p)
	t.mu.Unlock()
	return p
}

// Add registers n more effects (publishes, edge writes) of the transaction.
func (p *Pending) Add(n int) {
	p.t.mu.Lock()
	p.pending += n
	p.t.mu.Unlock()
}

// Done reports n effects durable.
func (p *Pending) Done(n int) {
	p.t.mu.Lock()
	p.pending -= n
	p.t.advance()
	p.t.mu.Unlock()
}

// Seal records the transaction's end LSN: no more effects will be added.
func (p *Pending) Seal(end LSN) {
	p.t.mu.Lock()
	p.end, p.sealed = end, true
	p.t.advance()
	p.t.mu.Unlock()
}

func (t *Tracker) advance() {
	n := 0
	for n < len(t.q) && t.q[n].sealed && t.q[n].pending <= 0 {
		if t.q[n].end > LSN(t.confirmed.Load()) {
			t.confirmed.Store(uint64(t.q[n].end))
		}
		n++
	}
	if n > 0 {
		for i := 0; i < n; i++ {
			t.q[i] = nil
		}
		t.q = t.q[n:]
		t.inflight.Add(int64(-n))
	}
}

// Confirmed is the LSN that may be reported as flushed.
func (t *Tracker) Confirmed() LSN { return LSN(t.confirmed.Load()) }

// InFlight is the number of received transactions not yet confirmed.
func (t *Tracker) InFlight() int64 { return t.inflight.Load() }

// idle advances to walEnd when no received transaction is outstanding (rule B).
// The reader calls it only outside a transaction.
func (t *Tracker) idle(walEnd LSN) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.inflight.Load() == 0 && len(t.q) == 0 && walEnd > LSN(t.confirmed.Load()) {
		t.confirmed.Store(uint64(walEnd))
	}
}

// Drained reports whether every sealed transaction is confirmed: what is left
// (if anything) is a transaction still being received.
func (t *Tracker) Drained() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.q) == 0 || !t.q[0].sealed
}
