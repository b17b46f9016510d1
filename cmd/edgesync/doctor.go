package main

import (
	"encoding/json"

	"github.com/spf13/cobra"

	"github.com/edgesync/edgesync/internal/doctor"
)

// errChecksFailed makes doctor exit 1 after it printed its results.
type errChecksFailed struct{}

func (errChecksFailed) Error() string { return "" }

func (a *app) doctorCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "check what a deployment needs (database, publication, NATS stream and permissions, data dir, ICP, blob host), one line per check with its fix",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			rs := doctor.Run(a.ctx, cfg)
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(struct {
					OK     bool            `json:"ok"`
					Checks []doctor.Result `json:"checks"`
				}{!doctor.Failed(rs), rs}); err != nil {
					return err
				}
			} else {
				doctor.Print(a.stdout, rs)
			}
			if doctor.Failed(rs) {
				return errChecksFailed{}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the results as JSON")
	return cmd
}
