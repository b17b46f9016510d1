package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
	"go.uber.org/zap/zapcore"

	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/daemon"
	"github.com/edgesync/edgesync/reconcile"
)

func (a *app) reconcileCmd() *cobra.Command {
	var dryRun, asJSON, importLegacy bool
	var writeMigration string
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "find and repair drift between the memory tables and storage_edges now (one run) and print its report",
		Long: `reconcile runs one reconciliation (CONTRACT section 6) and prints its report:
orphans, missing, drift, stuck, failed_retried, icp_drift and fixed.
With --dry-run it only counts. It exits 0 also when it found and fixed
things, 1 on an error or when another run is in progress.

--import-legacy instead imports the app's legacy "stored on ICP" columns
(EDGESYNC_LEGACY_COLUMNS, e.g. images.stored_on_icp) as icp-canister edges,
reports matched, created and conflicting edges, and prints the migration that
drops those columns (--write-migration FILE also writes it to FILE).`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if writeMigration != "" && !importLegacy {
				return userError{"--write-migration only goes with --import-legacy"}
			}
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			pool, err := pgxpool.New(a.ctx, cfg.DatabaseURL)
			if err != nil {
				return err
			}
			defer pool.Close()
			if err := pool.Ping(a.ctx); err != nil {
				return err
			}
			// Info lines would interleave with the report; warnings still show.
			lc := cfg
			if lc.LogLevel == "info" {
				lc.LogLevel = "warn"
			}
			log, err := daemon.NewLogger(lc, zapcore.AddSync(a.stderr))
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck // best effort at exit
			svc, closeSvc := daemon.ReconcileService(cfg, pool, log)
			defer closeSvc()
			if importLegacy {
				return a.importLegacy(svc, cfg, dryRun, asJSON, writeMigration)
			}
			bar := newProgressBar(a.stderr)
			run, err := svc.RunNow(a.ctx, reconcile.TriggerCLI, dryRun, bar.update)
			bar.finish()
			if errors.Is(err, reconcile.ErrAlreadyRunning) {
				return userError{"another reconcile run is in progress (the daemon's schedule or another `edgesync reconcile`); wait for it to finish and try again"}
			}
			if err != nil {
				if run.ID != "" {
					return fmt.Errorf("reconcile run %s: %w", run.ID, err)
				}
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, run)
			}
			printRun(a.stdout, run, cfg.StuckAfter)
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only count what a run would repair; change nothing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the run (with its report) as JSON")
	cmd.Flags().BoolVar(&importLegacy, "import-legacy", false, "import EDGESYNC_LEGACY_COLUMNS as icp-canister edges instead of a run")
	cmd.Flags().StringVar(&writeMigration, "write-migration", "", "with --import-legacy: also write the migration that drops the legacy columns to `FILE`")
	return cmd
}

func (a *app) importLegacy(svc *reconcile.Service, cfg config.Config, dryRun, asJSON bool, file string) error {
	cols := make([]reconcile.LegacyColumn, 0, len(cfg.LegacyColumns))
	for _, c := range cfg.LegacyColumns {
		cols = append(cols, reconcile.LegacyColumn{Table: c.Table, Column: c.Column})
	}
	if len(cols) == 0 {
		return userError{"no legacy columns configured: set EDGESYNC_LEGACY_COLUMNS to the boolean columns that mean \"stored on ICP\" (e.g. images.stored_on_icp,videos.stored_on_icp)"}
	}
	rep, err := svc.ImportLegacy(a.ctx, cols, dryRun)
	if errors.Is(err, reconcile.ErrAlreadyRunning) {
		return userError{"a reconcile run is in progress; wait for it to finish and run the import again"}
	}
	if err != nil {
		return err
	}
	if file != "" {
		if err := os.WriteFile(file, []byte(rep.Migration), 0o644); err != nil {
			return userError{fmt.Sprintf("--write-migration %s: %v", file, unwrapPath(err))}
		}
	}
	if asJSON {
		return writeJSON(a.stdout, rep)
	}
	w := a.stdout
	if dryRun {
		fmt.Fprintln(w, "legacy import (dry run: nothing was changed; \"created\" is what an import would create)")
	} else {
		fmt.Fprintln(w, "legacy import")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TABLE\tCOLUMN\tFLAGGED ROWS\tMATCHED\tCREATED\tCONFLICTED")
	for _, t := range rep.Tables {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\n", t.Table, t.Column, t.Flagged, t.Matched, t.Created, t.Conflicted)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, t := range rep.Tables {
		if len(t.ConflictSamples) > 0 {
			fmt.Fprintf(w, "conflicts in %s (icp edge exists but is not present or failed; left alone), e.g.: %s\n", t.Table, strings.Join(t.ConflictSamples, ", "))
		}
	}
	if file != "" {
		fmt.Fprintf(w, "\nwrote the migration that drops the legacy columns to %s\n", file)
		return nil
	}
	fmt.Fprintf(w, "\nmigration that drops the legacy columns (apply it with the app's migrations once the import is done; --write-migration FILE writes it):\n\n%s", rep.Migration)
	return nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printRun(w io.Writer, run reconcile.Run, stuckAfter time.Duration) {
	r := run.Report
	verb := "fixed"
	if run.DryRun {
		fmt.Fprintf(w, "reconcile run %s: dry run, nothing was changed (%d ms)\n", run.ID, r.DurationMS)
		verb = "would fix"
	} else {
		fmt.Fprintf(w, "reconcile run %s: done (%d ms)\n", run.ID, r.DurationMS)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	line := func(name string, n int64, what string) { fmt.Fprintf(tw, "  %s\t%d\t%s\n", name, n, what) }
	line("orphans", r.Orphans, "edges whose memory row is gone")
	line("missing", r.Missing, "edges the memory rows need that did not exist")
	line("drift", r.Drift, "web2 edges that disagreed with their row (location, presence, size)")
	line("stuck", r.Stuck, fmt.Sprintf("migrating syncs older than %s (retried, or failed after the last attempt)", stuckAfter))
	line("failed_retried", r.FailedRetried, "failed syncs whose retry time had come")
	line("icp_drift", r.ICPDrift, "not checked from the CLI (the daemon checks it when the ICP mirror is on)")
	_ = tw.Flush()
	found := r.Orphans + r.Missing + r.Drift + r.Stuck + r.FailedRetried + r.ICPDrift
	switch {
	case found == 0:
		fmt.Fprintln(w, "storage_edges is in step with the memory tables: nothing to do")
	case run.DryRun:
		fmt.Fprintf(w, "%s: %d (run without --dry-run to repair)\n", verb, found)
	default:
		fmt.Fprintf(w, "%s: %d rows\n", verb, r.Fixed)
	}
}

// progressBar draws on a terminal only; elsewhere (pipes, CI logs, tests)
// it stays silent so the output is just the report.
type progressBar struct {
	w    io.Writer
	on   bool
	last time.Time
}

func newProgressBar(w io.Writer) *progressBar {
	f, ok := w.(*os.File)
	if !ok {
		return &progressBar{w: w}
	}
	st, err := f.Stat()
	return &progressBar{w: w, on: err == nil && st.Mode()&os.ModeCharDevice != 0}
}

func (p *progressBar) update(done, total int64) {
	if !p.on || time.Since(p.last) < 100*time.Millisecond && done < total {
		return
	}
	p.last = time.Now()
	const width = 30
	frac := 1.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	n := int(frac * width)
	fmt.Fprintf(p.w, "\rreconcile [%s%s] %3.0f%%  %d/%d memories", strings.Repeat("#", n), strings.Repeat("-", width-n), frac*100, done, total)
}

func (p *progressBar) finish() {
	if p.on && !p.last.IsZero() {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
