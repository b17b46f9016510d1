package daemon

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/edgesync/edgesync/cdc"
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
