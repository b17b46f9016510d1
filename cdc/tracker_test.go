package cdc

import "testing"

func TestTracker_ConfirmsOnlyDurablePrefix(t *testing.T) {
	tr := NewTracker(100)
	var ps []*Pending
	for i := 0; i < 3; i++ {
		tr.received()
		p := tr.Open()
		p.Add(2)
		p.Seal(LSN(200 + 100*i))
		ps = append(ps, p)
	}
	ps[2].Done(2) // the last one finishes first: nothing may be confirmed
	ps[1].Done(2)
	if got := tr.Confirmed(); got != 100 {
		t.Fatalf("confirmed %v before the first transaction was durable", got)
	}
	tr.idle(10_000) // not idle: in flight
	if got := tr.Confirmed(); got != 100 {
		t.Fatalf("idle advanced while in flight: %v", got)
	}
	ps[0].Done(1)
	if got := tr.Confirmed(); got != 100 {
		t.Fatalf("confirmed %v with one effect outstanding", got)
	}
	ps[0].Done(1)
	if got := tr.Confirmed(); got != 400 {
		t.Fatalf("confirmed %v, want 400 (all three durable)", got)
	}
	if tr.InFlight() != 0 {
		t.Fatalf("inflight %d", tr.InFlight())
	}
	tr.idle(500)
	if got := tr.Confirmed(); got != 500 {
		t.Fatalf("idle keepalive not confirmed: %v", got)
	}
	tr.idle(450) // never backwards
	if got := tr.Confirmed(); got != 500 {
		t.Fatalf("went backwards: %v", got)
	}
}

func TestTracker_UnsealedHoldsBack(t *testing.T) {
	tr := NewTracker(1)
	tr.received()
	p := tr.Open()
	p.Add(1)
	p.Done(1)
	if tr.Confirmed() != 1 {
		t.Fatal("confirmed an unsealed transaction")
	}
	p.Seal(9)
	if tr.Confirmed() != 9 {
		t.Fatalf("got %v", tr.Confirmed())
	}
}
