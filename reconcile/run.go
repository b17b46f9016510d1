package reconcile

import (
	"errors"
	"time"
)

var (
	// ErrAlreadyRunning is returned when another run holds the reconcile lock
	// (HTTP 409).
	ErrAlreadyRunning = errors.New("a reconcile run is already running")
	// ErrRunNotFound is returned by Get for an unknown run id (HTTP 404).
	ErrRunNotFound = errors.New("reconcile run not found")
	// ErrBadRunID is returned by Get when the id is not a UUID (HTTP 400).
	ErrBadRunID = errors.New("reconcile run id is not a UUID")
	// ErrShuttingDown is returned by Start once Wait has begun the shutdown.
	ErrShuttingDown = errors.New("reconcile service is shutting down")
)

// Triggers of a run, as recorded in reconcile_runs.trigger.
const (
	TriggerCLI      = "cli"
	TriggerHTTP     = "http"
	TriggerNATS     = "nats"
	TriggerSchedule = "schedule"
	TriggerSlotLost = "slot_lost"
	TriggerStartup  = "startup"
)

// Report is the outcome of a run (CONTRACT section 6). Fixed is 0 on a dry run.
type Report struct {
	Orphans       int64 `json:"orphans"`
	Missing       int64 `json:"missing"`
	Drift         int64 `json:"drift"`
	Stuck         int64 `json:"stuck"`
	FailedRetried int64 `json:"failed_retried"`
	ICPDrift      int64 `json:"icp_drift"`
	Fixed         int64 `json:"fixed"`
	DurationMS    int64 `json:"duration_ms"`
	DryRun        bool  `json:"dry_run"`
	// ByType breaks the counts down per memory type.
	ByType map[string]*Counts `json:"by_type,omitempty"`
}

// Counts are one memory type's findings.
type Counts struct {
	Orphans int64 `json:"orphans"`
	Missing int64 `json:"missing"`
	Drift   int64 `json:"drift"`
}

// Run is one recorded run.
type Run struct {
	ID         string     `json:"run_id"`
	Trigger    string     `json:"trigger"`
	DryRun     bool       `json:"dry_run"`
	State      string     `json:"state"` // running, done, error
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	Report     *Report    `json:"report,omitempty"`
	Error      string     `json:"error,omitempty"`
}
