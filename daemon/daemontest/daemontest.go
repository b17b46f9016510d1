// Package daemontest runs a daemon in-process for the tests of other
// packages (the daemon's own tests have their helpers inside the package).
package daemontest

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/daemon"
)

// Start builds a daemon from cfg and runs it until the test ends; the test
// fails if it exits with an error or does not stop within 30 s of the end.
func Start(tb testing.TB, cfg config.Config, log *zap.Logger) *daemon.Daemon {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d, err := daemon.New(ctx, cfg, log)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("daemon (slot %s) exited with %v", cfg.Slot, err)
			}
		case <-time.After(30 * time.Second):
			tb.Errorf("daemon (slot %s) did not stop within 30 s", cfg.Slot)
		}
	})
	return d
}
