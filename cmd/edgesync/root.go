package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/internal/dberr"
)

// env looks up an environment variable (os.LookupEnv in production).
type env func(string) (string, bool)

// app carries what every command needs.
type app struct {
	ctx        context.Context
	env        env
	stdout     io.Writer
	stderr     io.Writer
	configFile string
	// cfg is the configuration once loaded: its secrets are scrubbed from
	// every error line.
	cfg *config.Config
}

// userError is an error already phrased for a person.
type userError struct{ msg string }

func (e userError) Error() string { return e.msg }

// run executes one command line and returns the process exit code.
func run(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) int {
	a := &app{ctx: ctx, env: lookup, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "edgesync",
		Short:         "edgesync keeps storage_edges in step with the memory tables, publishes every change to NATS and mirrors memories to ICP",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)
	root.PersistentFlags().StringVar(&a.configFile, "config", "", "YAML file with settings (the keys of docs/configuration.md: lower snake case, no prefix); the environment wins")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return userError{fmt.Sprintf("%v (see `%s --help`)", err, c.CommandPath())}
	})
	root.AddCommand(a.versionCmd(), a.migrateCmd(), a.runCmd(), a.statusCmd(), a.reconcileCmd(), a.doctorCmd(), a.tailCmd())
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	if errors.As(err, new(errChecksFailed)) {
		return 1 // doctor printed why
	}
	line := explain(err)
	if a.cfg != nil {
		line = a.cfg.Scrub(line)
	}
	fmt.Fprintln(stderr, "edgesync: "+line)
	return 1
}

// explain turns an error into the one line a person reads.
func explain(err error) string {
	var ue userError
	if errors.As(err, &ue) {
		return ue.msg
	}
	if strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "accepts ") {
		return err.Error() + " (see `edgesync --help`)"
	}
	return dberr.Explain(err)
}

// loadConfig reads and validates the configuration.
func (a *app) loadConfig() (config.Config, error) {
	c, err := config.Load(a.configFile, a.env)
	a.cfg = &c
	if err != nil {
		return c, userError{err.Error()}
	}
	if err := c.Validate(); err != nil {
		lines := strings.Split(err.Error(), "\n")
		msg := "invalid configuration: " + strings.Join(lines, "; ")
		return c, userError{msg}
	}
	return c, nil
}

// loadConfigWithoutDB is loadConfig for commands that never open the
// database (tail): EDGESYNC_DATABASE_URL may be unset.
func (a *app) loadConfigWithoutDB() (config.Config, error) {
	lookup := a.env
	a.env = func(k string) (string, bool) {
		if v, ok := lookup(k); ok || k != config.Env("database_url") {
			return v, ok
		}
		return "postgres://unused.invalid/unused", true
	}
	defer func() { a.env = lookup }()
	return a.loadConfig()
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintf(a.stdout, "edgesync %s (commit %s, %s %s/%s)\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
