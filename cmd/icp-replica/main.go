package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/aviate-labs/agent-go/principal"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/edgesync/edgesync/internal/icpreplica"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes: 2 for a usage error, 1 for a failure while running.
const (
	exitFailure = 1
	exitUsage   = 2
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("icp-replica", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors get one line of ours; -h gets the full usage
	addr := fs.String("addr", "127.0.0.1:4943", "listen `address` (port 0 picks a free one)")
	canister := fs.String("canister-id", icpreplica.DefaultCanisterID, "`principal` of the hosted canister")
	latency := fs.Duration("latency", 0, "`delay` added before every request")
	failRate := fs.Float64("fail-rate", 0, "`fraction` (0..1) of POST requests answered 503")
	async := fs.Bool("async", false, "answer calls 202 so clients poll, instead of a certificate")
	stateFile := fs.String("state-file", "", "keep keys and canister state in this `file` across restarts")
	verbose := fs.Bool("v", false, "log every request")
	var controllers, writers principals
	fs.Var(&controllers, "controller", "`principal` that may call authorize/deauthorize (repeatable); with any, writes need authorization")
	fs.Var(&writers, "writer", "`principal` on the writer list from the start (repeatable)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fmt.Fprintln(stdout, "usage: icp-replica [flags]")
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintf(stderr, "icp-replica: %v (see icp-replica -h)\n", err)
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "icp-replica: unexpected argument %q (see icp-replica -h)\n", fs.Arg(0))
		return exitUsage
	}
	log := newLogger(stderr, *verbose)
	defer func() { _ = log.Sync() }()

	r, err := icpreplica.New(icpreplica.Config{
		Addr: *addr, CanisterID: *canister, Latency: *latency, FailRate: *failRate, Async: *async,
		Logger: log, Controllers: controllers, Writers: writers,
	})
	if err != nil {
		fmt.Fprintf(stderr, "icp-replica: %v\n", err)
		return exitUsage
	}
	if *stateFile != "" {
		if err := r.LoadFile(*stateFile); err != nil {
			fmt.Fprintf(stderr, "icp-replica: %v\n", err)
			return exitFailure
		}
	}
	if err := r.Listen(); err != nil {
		fmt.Fprintf(stderr, "icp-replica: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "canister_id=%s\nurl=%s\n", r.CanisterID(), r.URL())
	log.Info("serving", zap.String("url", r.URL()), zap.Stringer("canister_id", r.CanisterID()),
		zap.Duration("latency", *latency), zap.Float64("fail_rate", *failRate), zap.Bool("async", *async),
		zap.Bool("writes_open", len(controllers) == 0 && len(writers) == 0))

	<-ctx.Done()
	code := 0
	if err := r.Stop(); err != nil {
		log.Error("stop", zap.Error(err))
		code = exitFailure
	}
	if *stateFile != "" {
		if err := r.SaveFile(*stateFile); err != nil {
			log.Error("save state", zap.Error(err))
			code = exitFailure
		}
	}
	log.Info("stopped")
	return code
}

// principals is a repeatable flag of principal texts.
type principals []principal.Principal

func (p *principals) String() string {
	out := make([]string, len(*p))
	for i, x := range *p {
		out[i] = x.String()
	}
	return strings.Join(out, ",")
}

func (p *principals) Set(s string) error {
	x, err := principal.Decode(s)
	if err != nil {
		return fmt.Errorf("principal %q: %w", s, err)
	}
	*p = append(*p, x)
	return nil
}

func newLogger(w io.Writer, verbose bool) *zap.Logger {
	level := zapcore.InfoLevel
	if verbose {
		level = zapcore.DebugLevel
	}
	enc := zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), level)).With(zap.String("component", "icp-replica"))
}
