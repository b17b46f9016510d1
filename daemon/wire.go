package daemon

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/internal/gallerystatus"
	"github.com/edgesync/edgesync/reconcile"
	"github.com/edgesync/edgesync/sinks/icp"
	natssink "github.com/edgesync/edgesync/sinks/nats"
)

// ReconcileConfig translates the global configuration for the reconcile
// package (the CLI uses it too).
func ReconcileConfig(c config.Config) reconcile.Config {
	return reconcile.Config{
		Tables:           c.Tables,
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

// ReconcileService builds the reconcile service for a one-off run outside
// the daemon (`edgesync reconcile`): like the daemon's, it checks ICP drift
// when the ICP mirror is configured and publishes `<prefix>.reconcile.completed`
// when an external NATS is configured. A backend that cannot be reached is
// logged and left out rather than failing the run. close releases what it
// opened.
func ReconcileService(c config.Config, pool *pgxpool.Pool, log *zap.Logger) (svc *reconcile.Service, close func()) {
	rc := ReconcileConfig(c)
	var closers []func()
	if c.ICPURL != "" {
		client, err := newICPClient(c, log)
		if err != nil {
			log.Warn("ICP replica unreachable: this run does not check ICP drift", zap.Error(err))
		} else {
			ch := &icpChecker{}
			ch.s.Store(icp.NewICPStatus(client))
			rc.ICP = ch
		}
	}
	if c.NATSURL != "" {
		opts := []natsgo.Option{natsgo.Name("edgesync-reconcile"), natsgo.Timeout(5 * time.Second)}
		if c.NATSCredsFile != "" {
			opts = append(opts, natsgo.UserCredentials(c.NATSCredsFile))
		}
		nc, err := natsgo.Connect(c.NATSURL, opts...)
		if err != nil {
			log.Warn("NATS unreachable: this run's report is not published", zap.Error(err))
		} else if js, err := jetstream.New(nc); err == nil {
			rc.Publish = func(ctx context.Context, subject string, data []byte) error {
				return natssink.PublishSync(ctx, js, subject, "", data)
			}
			closers = append(closers, nc.Close)
		} else {
			nc.Close()
		}
	}
	return reconcile.New(rc, pool, log, nil), func() {
		for _, f := range closers {
			f()
		}
	}
}
