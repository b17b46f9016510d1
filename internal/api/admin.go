package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/reconcile"
)

func (s *Server) startReconcile(w http.ResponseWriter, r *http.Request) {
	dryRun := false
	if v := r.URL.Query().Get("dry_run"); v != "" {
		var err error
		if dryRun, err = strconv.ParseBool(v); err != nil {
			writeError(w, badRequest("dry_run must be true or false"))
			return
		}
	}
	if s.deps.Reconciler == nil {
		writeError(w, unavailable("reconcile is not available on this instance"))
		return
	}
	id, err := s.deps.Reconciler.Start(r.Context(), reconcile.TriggerHTTP, dryRun)
	if errors.Is(err, reconcile.ErrAlreadyRunning) {
		writeError(w, &apiError{Status: http.StatusConflict, Code: "conflict", Message: err.Error() + "; wait for it to finish (GET /admin/reconcile/{run_id})"})
		return
	}
	if errors.Is(err, reconcile.ErrShuttingDown) {
		writeError(w, unavailable("this instance is shutting down; ask another one"))
		return
	}
	if err != nil {
		s.fail(w, r, fmt.Errorf("start reconcile: %w", err))
		return
	}
	w.Header().Set("Location", "/admin/reconcile/"+id)
	writeJSON(w, http.StatusAccepted, struct {
		RunID  string `json:"run_id"`
		DryRun bool   `json:"dry_run"`
	}{id, dryRun})
}

func (s *Server) getReconcile(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("run_id")
	if !domain.CanonicalUUID(id) {
		writeError(w, uuidError("run id", id))
		return
	}
	if s.deps.Reconciler == nil {
		writeError(w, unavailable("reconcile is not available on this instance"))
		return
	}
	run, err := s.deps.Reconciler.Get(r.Context(), id)
	if errors.Is(err, reconcile.ErrRunNotFound) {
		writeError(w, notFound("reconcile run "+id+" not found"))
		return
	}
	if errors.Is(err, reconcile.ErrBadRunID) {
		writeError(w, uuidError("run id", id))
		return
	}
	if err != nil {
		s.fail(w, r, fmt.Errorf("get reconcile run: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, run)
}

// listReconcileRuns answers GET /api/reconcile/runs: the run history with
// each run's report, newest first. Read-only, so no token: the reports are
// counts, never row contents.
func (s *Server) listReconcileRuns(w http.ResponseWriter, r *http.Request) {
	limit, ae := pageLimit(r.URL.Query().Get("limit"), 20, reconcile.MaxListedRuns)
	if ae != nil {
		writeError(w, ae)
		return
	}
	if s.deps.Reconciler == nil {
		writeError(w, unavailable("reconcile is not available on this instance"))
		return
	}
	runs, err := s.deps.Reconciler.List(r.Context(), limit)
	if err != nil {
		s.fail(w, r, fmt.Errorf("list reconcile runs: %w", err))
		return
	}
	if runs == nil {
		runs = []reconcile.Run{}
	}
	writeJSON(w, http.StatusOK, struct {
		Runs []reconcile.Run `json:"runs"`
	}{runs})
}

// backends answers from the last periodic check (see Health); before the
// first one every backend is reported as not checked yet.
func (s *Server) backends(w http.ResponseWriter, r *http.Request) {
	var out []BackendStatus
	var at time.Time
	if s.deps.Health != nil {
		out, at = s.deps.Health.Last()
		if at.IsZero() {
			for _, c := range s.deps.Health.checks {
				out = append(out, BackendStatus{Name: c.Name, Error: "not checked yet"})
			}
		}
	}
	if out == nil {
		out = []BackendStatus{} // the contract's backends is an array, never null
	}
	status := http.StatusOK
	for _, b := range out {
		if !b.OK {
			status = http.StatusServiceUnavailable
		}
	}
	var checkedAt *time.Time
	if !at.IsZero() {
		checkedAt = &at
	}
	writeJSON(w, status, struct {
		CheckedAt *time.Time      `json:"checked_at"`
		Backends  []BackendStatus `json:"backends"`
	}{checkedAt, out})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if !s.deps.Ready() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true})
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	s.deps.Metrics.ServeHTTP(w, r)
}
