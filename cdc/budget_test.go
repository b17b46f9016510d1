package cdc

import (
	"context"
	"testing"
	"time"
)

func TestBudget_AcquireWaitsForRelease(t *testing.T) {
	b := NewBudget(100)
	ctx := context.Background()
	if err := b.Acquire(ctx, 60); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- b.Acquire(ctx, 60) }()
	select {
	case err := <-got:
		t.Fatalf("second acquire of 60 of 100 returned %v while 60 were held", err)
	case <-time.After(50 * time.Millisecond):
	}
	b.Release(60)
	deadline := time.After(5 * time.Second)
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-deadline:
		t.Fatal("acquire did not proceed after release")
	}
	if b.Used() != 60 {
		t.Errorf("used = %d, want 60", b.Used())
	}
}

func TestBudget_OversizeAloneAndCancel(t *testing.T) {
	b := NewBudget(10)
	ctx, cancel := context.WithCancel(context.Background())
	if err := b.Acquire(ctx, 1000); err != nil {
		t.Fatalf("an oversize request with nothing held must pass: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Acquire(ctx, 1) }()
	cancel()
	if err := <-done; err == nil {
		t.Fatal("acquire over a full budget returned nil after cancel")
	}
	var nilBudget *Budget
	if err := nilBudget.Acquire(context.Background(), 1<<40); err != nil || nilBudget.Used() != 0 {
		t.Fatal("a nil budget is unlimited")
	}
}
