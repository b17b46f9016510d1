package daemon

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/internal/api"
	"github.com/edgesync/edgesync/internal/doctor"
	natssink "github.com/edgesync/edgesync/sinks/nats"
)

// preflight refuses, before anything runs, a publication or a stream the
// daemon cannot work with: the pipeline would otherwise retry forever on
// what only a person can fix. Other errors (NATS not up yet) are left to the
// pipeline's retries.
func (d *Daemon) preflight(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := cdc.CheckPublication(ctx, d.pool, d.cfg.Publication, doctor.PublishedTables(d.cfg)); err != nil {
		if errors.Is(err, cdc.ErrPublicationUnusable) {
			return err
		}
		d.log.Warn("could not check the publication; the pipeline will", zap.Error(err))
	}
	_, err := natssink.EnsureStream(ctx, d.js, natssink.StreamConfig{
		Name:          d.cfg.Stream,
		SubjectPrefix: d.cfg.SubjectPrefix,
		Replicas:      d.cfg.StreamReplicas,
		MaxBytes:      d.cfg.StreamMaxBytes,
		Notify:        func(msg string) { d.log.Warn(msg) },
	})
	if errors.Is(err, natssink.ErrStreamUnusable) {
		return err
	}
	if err != nil {
		d.log.Warn("could not check the stream yet; the pipeline will retry", zap.Error(err))
	}
	return nil
}

// scrubChecks keeps the configuration's secrets out of the backend checks'
// errors, which /api/health/backends and the logs show: a driver may quote
// a URL it was given.
func scrubChecks(cfg config.Config, checks []api.BackendCheck) []api.BackendCheck {
	out := make([]api.BackendCheck, len(checks))
	for i, c := range checks {
		check := c.Check
		out[i] = api.BackendCheck{Name: c.Name, Check: func(ctx context.Context) error {
			if err := check(ctx); err != nil {
				return errors.New(cfg.Scrub(err.Error()))
			}
			return nil
		}}
	}
	return out
}
