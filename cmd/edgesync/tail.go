package main

import (
	"fmt"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/internal/tail"
)

// embeddedNATSURL is where `run` starts its embedded development server
// when EDGESYNC_NATS_URL is empty and the port is free.
const embeddedNATSURL = "nats://127.0.0.1:4222"

func (a *app) tailCmd() *cobra.Command {
	var o tail.Options
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "follow the event stream: one line per event, or the JSON envelope with --json; runs until interrupted",
		Long: `Follows the JetStream stream (EDGESYNC_STREAM) with an ephemeral ordered consumer that acknowledges
nothing, so it takes no event from other consumers. Without --since or --from-seq it shows only new events.

Each line: stream time, stream sequence, subject (without the prefix), then op, memory, memory type and
event id for memory events; also artifact@backend, presence and sync state for edge events; the counts
for gallery status, upload progress and reconcile reports.`,
		Example: `  edgesync tail
  edgesync tail --subject 'edgesync.edge.icp-canister.>' --since 1h
  edgesync tail --memory 0b3c8f3e-4a5e-4f7e-9a3c-1d2e3f4a5b6c --from-seq 1 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("from-seq") && o.FromSeq == 0 {
				return userError{"--from-seq must be 1 or more (the stream's first sequence is 1)"}
			}
			if cmd.Flags().Changed("since") && o.Since <= 0 {
				return userError{fmt.Sprintf("--since %s must be positive, e.g. --since 15m", o.Since)}
			}
			cfg, err := a.loadConfigWithoutDB()
			if err != nil {
				return err
			}
			o.Stream, o.Prefix = cfg.Stream, cfg.SubjectPrefix
			if o, err = o.Normalize(); err != nil {
				return userError{strings.TrimPrefix(err.Error(), tail.ErrBadOptions.Error()+": ")}
			}
			url := cfg.NATSURL
			if url == "" {
				url = embeddedNATSURL
			}
			opts := []natsgo.Option{natsgo.Name("edgesync-tail"), natsgo.Timeout(5 * time.Second),
				natsgo.MaxReconnects(-1), natsgo.ReconnectWait(time.Second),
				// A missing permission only shows as an asynchronous error:
				// say it, or tail would wait silently.
				natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) {
					fmt.Fprintf(a.stderr, "edgesync: NATS: %v (the user needs the permissions in docs/consumers.md)\n", err)
				})}
			if cfg.NATSCredsFile != "" {
				opts = append(opts, natsgo.UserCredentials(cfg.NATSCredsFile))
			}
			nc, err := natsgo.Connect(url, opts...)
			if err != nil {
				hint := "check EDGESYNC_NATS_URL, EDGESYNC_NATS_CREDS and that NATS is reachable from here"
				if cfg.NATSURL == "" {
					hint = "EDGESYNC_NATS_URL is empty, so tail tried the embedded server of a local `edgesync run`; set EDGESYNC_NATS_URL to your NATS server"
				}
				return userError{fmt.Sprintf("cannot connect to NATS at %s: %v; %s", config.RedactURL(url), err, hint)}
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			if err := tail.Run(a.ctx, js, o, a.stdout); err != nil {
				return userError{err.Error()}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Subject, "subject", "", "NATS subject pattern under the prefix, e.g. 'edgesync.memory.>' or 'edgesync.edge.*.created' (default: every event)")
	f.StringVar(&o.Memory, "memory", "", "only the events of this memory (its UUID)")
	f.DurationVar(&o.Since, "since", 0, "start this long ago, e.g. 15m or 24h (not with --from-seq)")
	f.Uint64Var(&o.FromSeq, "from-seq", 0, "start at this stream sequence (1: the oldest kept; not with --since)")
	f.BoolVar(&o.JSON, "json", false, "print each event's JSON body, one per line")
	return cmd
}
