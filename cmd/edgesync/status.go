package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/domain"
)

// statusReport is what `edgesync status` prints.
type statusReport struct {
	Slot struct {
		Name           string `json:"name"`
		Exists         bool   `json:"exists"`
		Active         bool   `json:"active"`
		ActivePID      int    `json:"active_pid,omitempty"`
		WalStatus      string `json:"wal_status,omitempty"`
		ConfirmedFlush string `json:"confirmed_flush_lsn,omitempty"`
		LagBytes       int64  `json:"lag_bytes"`
	} `json:"slot"`
	Snapshot struct {
		State        string `json:"state"`
		EdgesCreated int64  `json:"edges_created"`
	} `json:"snapshot"`
	Edges         []edgeCount      `json:"edges"`
	Sync          map[string]int   `json:"sync"`
	LastReconcile *reconcileBrief  `json:"last_reconcile,omitempty"`
	Config        []config.Setting `json:"config"`
}

type edgeCount struct {
	Backend  string `json:"backend"`
	Artifact string `json:"artifact"`
	Present  bool   `json:"present"`
	Count    int64  `json:"count"`
}

type reconcileBrief struct {
	ID        string    `json:"run_id"`
	Trigger   string    `json:"trigger"`
	State     string    `json:"state"`
	StartedAt time.Time `json:"started_at"`
	DryRun    bool      `json:"dry_run"`
}

func (a *app) statusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "show the replication slot, its lag in bytes, and edge and sync counts",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			conn, err := pgx.Connect(a.ctx, cfg.DatabaseURL)
			if err != nil {
				return err
			}
			defer conn.Close(a.ctx)
			var r statusReport
			r.Config = cfg.Settings()
			s, err := cdc.ReadSlot(a.ctx, conn, cfg.Slot)
			if err != nil {
				return err
			}
			r.Slot.Name, r.Slot.Exists, r.Slot.Active, r.Slot.ActivePID = cfg.Slot, s.Exists, s.Active, s.ActivePID
			r.Slot.WalStatus, r.Slot.LagBytes = s.WalStatus, s.LagBytes
			if s.Exists {
				r.Slot.ConfirmedFlush = s.ConfirmedFlush.String()
			}
			r.Snapshot.State = "pending"
			err = conn.QueryRow(a.ctx, `SELECT snapshot_state, snapshot_edges FROM edgesync_pipeline_state WHERE slot = $1`, cfg.Slot).
				Scan(&r.Snapshot.State, &r.Snapshot.EdgesCreated)
			if err != nil && err != pgx.ErrNoRows {
				return fmt.Errorf("read pipeline state (run `edgesync migrate` first?): %w", err)
			}
			rows, err := conn.Query(a.ctx, `SELECT backend::text, artifact::text, present, count(*) FROM storage_edges GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`)
			if err != nil {
				return err
			}
			r.Edges, err = pgx.CollectRows(rows, pgx.RowToStructByPos[edgeCount])
			if err != nil {
				return err
			}
			r.Sync = map[string]int{domain.SyncIdle: 0, domain.SyncMigrating: 0, domain.SyncFailed: 0}
			rows, err = conn.Query(a.ctx, `SELECT sync_state::text, count(*) FROM storage_edges GROUP BY 1`)
			if err != nil {
				return err
			}
			for rows.Next() {
				var st string
				var n int
				if err := rows.Scan(&st, &n); err != nil {
					return err
				}
				r.Sync[st] = n
			}
			rows.Close()
			var rb reconcileBrief
			if err := conn.QueryRow(a.ctx, `SELECT id::text, trigger, state, started_at, dry_run FROM reconcile_runs ORDER BY started_at DESC LIMIT 1`).
				Scan(&rb.ID, &rb.Trigger, &rb.State, &rb.StartedAt, &rb.DryRun); err == nil {
				r.LastReconcile = &rb
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			return printStatus(a, r)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

func printStatus(a *app, r statusReport) error {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	if r.Slot.Exists {
		state := "inactive (no reader)"
		if r.Slot.Active {
			state = fmt.Sprintf("active (pid %d)", r.Slot.ActivePID)
		}
		fmt.Fprintf(tw, "slot\t%s: %s, wal_status %s, confirmed %s, lag %d bytes\n", r.Slot.Name, state, r.Slot.WalStatus, r.Slot.ConfirmedFlush, r.Slot.LagBytes)
	} else {
		fmt.Fprintf(tw, "slot\t%s: does not exist yet (`edgesync run` creates it)\n", r.Slot.Name)
	}
	fmt.Fprintf(tw, "snapshot\t%s, %d edges created\n", r.Snapshot.State, r.Snapshot.EdgesCreated)
	for _, e := range r.Edges {
		p := "present"
		if !e.Present {
			p = "not present"
		}
		fmt.Fprintf(tw, "edges\t%s %s %s: %d\n", e.Backend, e.Artifact, p, e.Count)
	}
	fmt.Fprintf(tw, "sync\tidle %d, migrating %d, failed %d\n", r.Sync[domain.SyncIdle], r.Sync[domain.SyncMigrating], r.Sync[domain.SyncFailed])
	if r.LastReconcile != nil {
		fmt.Fprintf(tw, "reconcile\tlast run %s (%s, %s) started %s\n", r.LastReconcile.ID, r.LastReconcile.Trigger, r.LastReconcile.State, r.LastReconcile.StartedAt.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}
