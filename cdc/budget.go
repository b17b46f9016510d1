package cdc

import (
	"context"
	"sync"
)

// Budget bounds the bytes held by one stage of the pipeline (the decoded
// changes waiting for the consumer, the events waiting for JetStream's ack),
// so a stalled downstream slows the reader instead of growing the heap.
// A nil *Budget is unlimited.
type Budget struct {
	mu      sync.Mutex
	total   int64
	used    int64
	waiting int           // Acquire calls waiting for bytes
	wake    chan struct{} // closed and replaced when bytes are released to waiters
}

// NewBudget returns a budget of total bytes.
func NewBudget(total int64) *Budget {
	return &Budget{total: total, wake: make(chan struct{})}
}

// Acquire takes n bytes, waiting until they are free. A request larger than
// the whole budget is granted when nothing else is held, so one huge row
// still passes (alone).
func (b *Budget) Acquire(ctx context.Context, n int64) error {
	if b == nil || n <= 0 {
		return nil
	}
	for {
		b.mu.Lock()
		if b.used == 0 || b.used+n <= b.total {
			b.used += n
			b.mu.Unlock()
			return nil
		}
		b.waiting++
		wake := b.wake
		b.mu.Unlock()
		var err error
		select {
		case <-wake:
		case <-ctx.Done():
			err = ctx.Err()
		}
		b.mu.Lock()
		b.waiting--
		b.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// TryAcquire takes n bytes if they are free now, as Acquire would without
// waiting.
func (b *Budget) TryAcquire(n int64) bool {
	if b == nil || n <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used == 0 || b.used+n <= b.total {
		b.used += n
		return true
	}
	return false
}

// Release returns n bytes.
func (b *Budget) Release(n int64) {
	if b == nil || n <= 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	if b.used < 0 {
		b.used = 0
	}
	if b.waiting > 0 { // the common case on the hot path: nobody waits, nothing to wake
		close(b.wake)
		b.wake = make(chan struct{})
	}
	b.mu.Unlock()
}

// Used is the bytes held now.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// Total is the budget's size (0 for a nil budget: unlimited).
func (b *Budget) Total() int64 {
	if b == nil {
		return 0
	}
	return b.total
}

// Size is the bytes an item holds: the row images it carries.
func (it Item) Size() int64 {
	if it.Change == nil {
		return 0
	}
	n := int64(64)
	for _, v := range it.Change.Old {
		n += int64(len(v.Data)) + 16
	}
	for _, v := range it.Change.New {
		n += int64(len(v.Data)) + 16
	}
	return n
}
