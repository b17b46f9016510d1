package daemon

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/edgesync/edgesync/pipeline"
)

// pingTimeout bounds one lock ping. A ping that times out closes the
// session (pgx cannot reuse a connection whose reply never came), and with
// it the lock, so it must outlast the pauses a healthy database has (a
// checkpoint, a 1.5 s stall) and stay below the 5 s after which the server
// frees the lock of a cut connection (tcp_user_timeout): the old leader has
// stepped down before a standby can take over.
const pingTimeout = 4 * time.Second

// Leader holds a Postgres advisory lock on a dedicated connection: the one
// instance holding it reads the slot. The lock frees when that connection
// dies (process killed, network cut noticed by TCP keepalives), and a standby
// polling for it takes over.
type Leader struct {
	url     string
	key     string
	poll    time.Duration
	log     *zap.Logger
	onState func(leader bool)
}

// NewLeader elects per key (the slot name: one reader per slot).
func NewLeader(url, key string, poll time.Duration, log *zap.Logger, onState func(bool)) *Leader {
	if poll <= 0 {
		poll = time.Second
	}
	return &Leader{url: url, key: key, poll: poll, log: log, onState: onState}
}

// Run waits for leadership, then calls lead with a context that ends when
// leadership is lost (or ctx ends). It returns when ctx ends.
func (l *Leader) Run(ctx context.Context, lead func(ctx context.Context)) error {
	l.onState(false)
	for ctx.Err() == nil {
		conn, err := l.connect(ctx)
		if err != nil {
			l.log.Warn("leader election: cannot connect; retrying", zap.Error(err))
			sleep(ctx, l.poll)
			continue
		}
		got, err := l.try(ctx, conn)
		if err != nil || !got {
			conn.Close(context.Background())
			if err != nil && ctx.Err() == nil {
				l.log.Warn("leader election", zap.Error(err))
			}
			sleep(ctx, l.poll)
			continue
		}
		l.log.Info("became leader: this instance reads the slot", zap.String("slot", l.key))
		l.onState(true)
		lctx, cancel := context.WithCancelCause(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			lead(lctx)
		}()
		// Watch the lock connection: if it dies, so does the lock. A slow
		// ping is not a lost lock (a busy or briefly paused database answers
		// late), so it gets pingTimeout, not the poll interval: each move
		// restarts the pipeline, and a jumpy leader is load that causes the
		// next move.
		t := time.NewTicker(l.poll)
	watch:
		for {
			select {
			case <-done:
				break watch
			case <-ctx.Done():
				break watch
			case <-t.C:
				pctx, pcancel := context.WithTimeout(ctx, pingTimeout)
				start := time.Now()
				err := conn.Ping(pctx)
				pcancel()
				if err != nil && ctx.Err() == nil {
					l.log.Error("lost the leader lock connection: stepping down", zap.Error(err))
					cancel(pipeline.ErrAbandon) // stop at once: another instance may lead already
					break watch
				}
				if slow := time.Since(start); slow > l.poll {
					l.log.Warn("leader lock ping was slow; keeping the lead", zap.Duration("took", slow))
				}
			}
		}
		t.Stop()
		cancel(nil)
		<-done
		l.onState(false)
		conn.Close(context.Background())
	}
	return nil
}

func (l *Leader) connect(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(l.url)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["application_name"] = "edgesync-leader"
	// Free the lock soon after a network cut: keepalives catch an idle
	// session, and tcp_user_timeout one whose answers (our pings) go
	// unacknowledged — keepalives do not probe while data is in flight.
	cfg.RuntimeParams["tcp_keepalives_idle"] = "5"
	cfg.RuntimeParams["tcp_keepalives_interval"] = "2"
	cfg.RuntimeParams["tcp_keepalives_count"] = "3"
	cfg.RuntimeParams["tcp_user_timeout"] = "5000"
	cfg.DialFunc = (&net.Dialer{KeepAlive: 5 * time.Second, Timeout: 10 * time.Second}).DialContext
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return pgx.ConnectConfig(cctx, cfg)
}

func (l *Leader) try(ctx context.Context, conn *pgx.Conn) (bool, error) {
	var got bool
	err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended('edgesync:slot:' || $1, 0))`, l.key).Scan(&got)
	if err != nil {
		return false, fmt.Errorf("try advisory lock: %w", err)
	}
	return got, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
