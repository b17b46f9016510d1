package main

import (
	"github.com/spf13/cobra"
	"go.uber.org/zap/zapcore"

	"github.com/edgesync/edgesync/daemon"
)

func (a *app) runCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "run the daemon: CDC → storage_edges → NATS, ICP mirror, periodic reconcile, HTTP API",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			// Secrets never reach the log, whatever a library puts in an error.
			w := zapcore.Lock(zapcore.AddSync(cfg.ScrubWriter(a.stderr)))
			log, err := daemon.NewLogger(cfg, w)
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck // best effort at exit
			d, err := daemon.New(a.ctx, cfg, log)
			if err != nil {
				return err
			}
			return d.Run(a.ctx)
		},
	}
}
