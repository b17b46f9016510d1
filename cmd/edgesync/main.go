// Command edgesync is the change-data-capture sync daemon of CONTRACT.md and
// its operator commands. main only wires OS signals and the exit code; the
// commands live in run so they can be tested in-process.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// Stamped at build time: -ldflags "-X main.version=v1.2.3 -X main.commit=abc123".
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}
