package cdc

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Claim is what ClaimSlot found.
type Claim struct {
	Slot SlotInfo
	// Lost is true when the slot was lost or invalidated (it has been
	// dropped: the caller re-creates it and re-snapshots) or is missing
	// although the caller had one (hadSlot).
	Lost bool
	// Terminated is the pid of a previous reader's walsender that was
	// terminated (0: none).
	Terminated int
}

// ClaimSlot prepares an existing slot for the caller, who holds the leader
// lock: it checks the slot can be resumed (plugin, database), drops a lost or
// invalidated one, and terminates the walsender of a dead leader that still
// holds it. hadSlot says whether the caller's own records say a slot existed
// (so a missing slot is a lost one, never silently a first start).
func ClaimSlot(ctx context.Context, q Querier, slot, database string, hadSlot bool) (Claim, error) {
	var c Claim
	s, err := ReadSlot(ctx, q, slot)
	if err != nil {
		return c, err
	}
	c.Slot = s
	if !s.Exists {
		c.Lost = hadSlot
		return c, nil
	}
	if err := s.Check(slot, database); err != nil {
		if !errors.Is(err, ErrSlotLost) {
			return c, err
		}
		if err := DropSlot(ctx, q, slot); err != nil {
			return c, err
		}
		c.Lost, c.Slot.Exists = true, false
		return c, nil
	}
	if s.Active && s.ActivePID != 0 {
		// The caller holds the leader lock, so the slot's reader is a dead
		// leader's walsender that the server has not noticed yet.
		if err := terminateReader(ctx, q, slot, s.ActivePID); err != nil {
			return c, err
		}
		c.Terminated = s.ActivePID
	}
	return c, nil
}

func terminateReader(ctx context.Context, q Querier, slot string, pid int) error {
	if _, err := q.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		return fmt.Errorf("terminate the previous reader of slot %s (pid %d): %w", slot, pid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		s, err := ReadSlot(ctx, q, slot)
		if err != nil {
			return err
		}
		if !s.Active {
			return nil
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	return fmt.Errorf("%w: slot %s is still active for pid %d", ErrSlotInUse, slot, pid)
}
