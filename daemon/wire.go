package daemon

import (
	"context"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/icp"
	"github.com/edgesync/edgesync/internal/gallerystatus"
	"github.com/edgesync/edgesync/mirror"
	"github.com/edgesync/edgesync/reconcile"
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

// ICPConfig is the canister client's configuration.
func ICPConfig(c config.Config) icp.Config {
	return icp.Config{URL: c.ICPURL, CanisterID: c.ICPCanisterID, IdentityFile: c.ICPIdentityFile, FetchRootKey: c.ICPFetchRootKey}
}

// MirrorConfig translates the global configuration for the ICP mirror.
func MirrorConfig(c config.Config) mirror.Config {
	return mirror.Config{
		Tables:        c.Tables,
		ICP:           ICPConfig(c),
		Subjects:      domain.Subjects{Prefix: c.SubjectPrefix},
		MaxAttempts:   c.ICPMaxAttempts,
		AssetMaxBytes: c.AssetMaxBytes,
		AssetHosts:    c.AssetHostPatterns(),
		RoundBase:     c.ICPRetryBase,
		SpoolDir:      SpoolDir(c),
		// A job left running by a crashed leader is rescued after this (+1 min), so keep it to a
		// bound on one large upload.
		JobTimeout: 15 * time.Minute,
	}
}

// SpoolDir is where the ICP mirror keeps downloads too large for memory while they upload.
func SpoolDir(c config.Config) string { return filepath.Join(c.DataDir, "spool") }

// newMirror builds the ICP mirror: its progress goes to the SSE hub and, on core NATS (the
// stream captures sync.>), to JetStream; progress needs no ack and must not hold up the chunks.
func newMirror(d *Daemon) (*mirror.Mirror, error) {
	return mirror.New(MirrorConfig(d.cfg), mirror.Deps{
		Pool:    d.pool,
		Log:     d.log,
		Metrics: mirror.NewMetrics(d.reg),
		Publish: func(subject string, data []byte) error {
			// Core NATS (the stream captures sync.>): progress needs no ack
			// and must not hold up the chunk senders. Every instance's SSE
			// hub gets it back from the stream (internal/ssefeed). Its
			// Nats-TTL lets the stream drop it long before the change events.
			return d.nc.PublishMsg(natssink.ProgressMessage(subject, data, 0))
		},
	})
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
		client, err := icp.New(ICPConfig(c), log)
		if err != nil {
			log.Warn("ICP replica unreachable: this run does not check ICP drift", zap.Error(err))
		} else {
			rc.ICP = mirror.NewChecker(client)
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
			rc.Publish = jsPublish(js)
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
