package reconcile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// RunEvery runs a reconciliation every interval until ctx ends (then it
// returns nil). An interval of 0 turns the schedule off: it just waits for
// ctx. A tick that comes while a run is active, here or in another process,
// is skipped. A failed run is logged and the schedule goes on.
func (s *Service) RunEvery(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		run, err := s.RunNow(ctx, TriggerSchedule, false, nil)
		switch {
		case errors.Is(err, ErrAlreadyRunning):
			s.log.Debug("scheduled reconcile skipped: a run is active")
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			s.log.Error("scheduled reconcile run failed", zap.String("run_id", run.ID), zap.Error(err))
		}
	}
}

// natsRequest is the body of a <prefix>.admin.reconcile request.
type natsRequest struct {
	DryRun bool `json:"dry_run"`
}

// natsReply is the answer: a run id, or an error with a code.
type natsReply struct {
	RunID  string `json:"run_id,omitempty"`
	Status string `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
	Code   string `json:"code,omitempty"`
}

// ServeNATS answers run requests on subject (default
// <prefix>.admin.reconcile) until ctx ends. The request body is
// {"dry_run": bool} (empty means a full run); the reply carries the run id.
// Instances share a queue group, so one request starts one run.
func (s *Service) ServeNATS(ctx context.Context, nc *nats.Conn, subject string) error {
	if subject == "" {
		subject = s.cfg.SubjectPrefix + ".admin.reconcile"
	}
	sub, err := nc.QueueSubscribe(subject, "edgesync-reconcile", func(msg *nats.Msg) {
		reply := s.handleRequest(ctx, msg.Data)
		data, _ := json.Marshal(reply)
		if err := msg.Respond(data); err != nil && !errors.Is(err, nats.ErrMsgNoReply) {
			s.log.Warn("reply to a reconcile request", zap.Error(err))
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", subject, err)
	}
	<-ctx.Done()
	if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("unsubscribe from %s: %w", subject, err)
	}
	return nil
}

// handleRequest answers one request. Replies go to whoever may publish on
// the subject, so they carry fixed words and codes, never an error's own
// text (which can name tables, hosts or SQL); the log has that.
func (s *Service) handleRequest(ctx context.Context, body []byte) natsReply {
	var req natsRequest
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			return natsReply{Error: `the request body must be empty or JSON like {"dry_run": true}`, Code: "bad_request"}
		}
	}
	id, err := s.Start(ctx, TriggerNATS, req.DryRun)
	switch {
	case errors.Is(err, ErrAlreadyRunning):
		return natsReply{Error: ErrAlreadyRunning.Error(), Code: "already_running"}
	case errors.Is(err, ErrShuttingDown):
		return natsReply{Error: "this instance is shutting down; ask again", Code: "unavailable"}
	case err != nil:
		s.log.Error("start a reconcile run for a NATS request", zap.Error(err))
		return natsReply{Error: "the run could not be started; the daemon's log says why", Code: "internal"}
	}
	return natsReply{RunID: id, Status: "started"}
}
