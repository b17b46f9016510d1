package main

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver for goose
	"github.com/spf13/cobra"

	"github.com/edgesync/edgesync/migrations"
)

func (a *app) migrateCmd() *cobra.Command {
	var appSchema, asJSON bool
	cmd := &cobra.Command{
		Use:   "migrate [up|down|status]",
		Short: "apply (up, the default), roll back one step (down) or list (status) the schema migrations",
		Long: `migrate manages edgesync's SQL objects on EDGESYNC_DATABASE_URL.
With --app-schema it also manages the reference app schema (memory tables,
galleries, gallery_items) for demos, tests and new installs.
Running up twice is a no-op; down rolls back one step (the rollback plan).`,
		Args:      cobra.MatchAll(cobra.MaximumNArgs(1), cobra.OnlyValidArgs),
		ValidArgs: []string{"up", "down", "status"},
		RunE: func(cmd *cobra.Command, args []string) error {
			action := "up"
			if len(args) == 1 {
				action = args[0]
			}
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			db, err := sql.Open("pgx", cfg.DatabaseURL)
			if err != nil {
				return err
			}
			defer db.Close()
			if err := db.PingContext(a.ctx); err != nil {
				return err
			}
			switch action {
			case "up":
				rs, err := migrations.Up(a.ctx, db, appSchema)
				for _, r := range rs {
					fmt.Fprintln(a.stdout, "OK", r)
				}
				if err != nil {
					return err
				}
				if len(rs) == 0 {
					fmt.Fprintln(a.stdout, "schema is up to date: nothing to apply")
				}
			case "down":
				r, err := migrations.Down(a.ctx, db, appSchema)
				if errors.Is(err, migrations.ErrNothingToRollBack) {
					fmt.Fprintln(a.stdout, err)
					return nil
				}
				if err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, "OK", r)
			case "status":
				st, err := migrations.Status(a.ctx, db, appSchema)
				if err != nil {
					return err
				}
				if asJSON {
					enc := json.NewEncoder(a.stdout)
					enc.SetIndent("", "  ")
					return enc.Encode(st)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "VERSION\tMIGRATION\tSTATE\tAPPLIED AT")
				for _, m := range st {
					state, at := "pending", ""
					if m.Applied {
						state, at = "applied", m.AppliedAt.UTC().Format("2006-01-02 15:04:05Z")
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", m.Version, m.Name, state, at)
				}
				return tw.Flush()
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&appSchema, "app-schema", false, "also manage the reference app schema (CONTRACT section 3.2)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "status as JSON")
	return cmd
}
