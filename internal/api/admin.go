package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
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

// BackendStatus is one backend's answer in GET /api/health/backends.
type BackendStatus struct {
	Name      string  `json:"name"`
	OK        bool    `json:"ok"`
	Error     string  `json:"error,omitempty"`
	LatencyMS float64 `json:"latency_ms"`
}

// backendCheckTimeout bounds one check, so one hung backend cannot use up the
// whole handler deadline and hide the others' answers.
const backendCheckTimeout = 3 * time.Second

func (s *Server) backends(w http.ResponseWriter, r *http.Request) {
	out := make([]BackendStatus, len(s.deps.Backends))
	var wg sync.WaitGroup
	for i, b := range s.deps.Backends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = s.check(r.Context(), b)
		}()
	}
	wg.Wait()
	status := http.StatusOK
	for _, b := range out {
		if !b.OK {
			status = http.StatusServiceUnavailable
		}
	}
	writeJSON(w, status, struct {
		Backends []BackendStatus `json:"backends"`
	}{out})
}

func (s *Server) check(ctx context.Context, b BackendCheck) (st BackendStatus) {
	st.Name = b.Name
	ctx, cancel := context.WithTimeout(ctx, backendCheckTimeout)
	defer cancel()
	start := time.Now()
	defer func() {
		// A panicking check is a down backend, not a crashed request.
		if v := recover(); v != nil {
			st.OK, st.Error = false, fmt.Sprint("check panicked: ", v)
		}
		st.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
	}()
	if err := b.Check(ctx); err != nil {
		st.Error = err.Error()
		return st
	}
	st.OK = true
	return st
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
