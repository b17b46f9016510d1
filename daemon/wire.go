package daemon

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/internal/gallerystatus"
	"github.com/edgesync/edgesync/reconcile"
	natssink "github.com/edgesync/edgesync/sinks/nats"
)

// ReconcileConfig translates the global configuration for the reconcile
// package (the CLI uses it too).
func ReconcileConfig(c config.Config) reconcile.Config {
	ts := make([]reconcile.Table, 0, len(c.Tables))
	for _, t := range c.Tables {
		ts = append(ts, reconcile.Table(t))
	}
	return reconcile.Config{
		Tables:           ts,
		ICPEdgesOnDelete: c.ICPEdgesOnDelete,
		StuckAfter:       c.StuckAfter,
		MaxAttempts:      c.ICPMaxAttempts,
		SubjectPrefix:    c.SubjectPrefix,
	}
}

// jsPublish returns a publish function for low-rate events (gallery status,
// reconcile reports): it waits for the ack; an empty id sends no msg id.
func jsPublish(js jetstream.JetStream) func(ctx context.Context, subject, msgID string, data []byte) error {
	return func(ctx context.Context, subject, msgID string, data []byte) error {
		return natssink.PublishSync(ctx, js, subject, msgID, data)
	}
}

func galleryConfig(c config.Config) gallerystatus.Config {
	return gallerystatus.Config{SubjectPrefix: c.SubjectPrefix}
}
