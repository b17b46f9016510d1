package daemon

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"

	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/reconcile"
	"github.com/edgesync/edgesync/sinks/icp"
)

// icpChecker lets reconcile compare edges with the canister once the ICP
// client exists (it is made lazily: the replica may be down at start).
type icpChecker struct{ s atomic.Pointer[icp.ICPStatus] }

var _ reconcile.ICPChecker = (*icpChecker)(nil)

func (c *icpChecker) Status(ctx context.Context, memoryID string) (reconcile.ICPStatus, error) {
	s := c.s.Load()
	if s == nil {
		return reconcile.ICPStatus{}, fmt.Errorf("the ICP client is not connected yet")
	}
	meta, asset, size, err := s.Status(ctx, memoryID)
	if err != nil {
		return reconcile.ICPStatus{}, err
	}
	return reconcile.ICPStatus{
		Metadata: reconcile.ICPObject{Present: meta != "", Hash: meta},
		Asset:    reconcile.ICPObject{Present: asset != "", Hash: asset, Size: size},
	}, nil
}

type wake struct{ id, typ string }

// mirror runs the ICP mirror on the leader: it connects the client (retrying
// while the replica is unreachable), runs the River-backed mirror, and feeds
// it the migrating icp-canister edges the pipeline sees.
type mirror struct {
	d       *Daemon
	checker *icpChecker
	wakes   chan wake
	// dropped is set when a wake did not fit the queue: the mirror then
	// re-reads the migrating edges instead of ever blocking the pipeline.
	dropped atomic.Bool

	mu     sync.Mutex
	client *icp.Client
}

func newMirror(d *Daemon) *mirror {
	return &mirror{d: d, checker: &icpChecker{}, wakes: make(chan wake, 4096)}
}

// Wake queues a memory for the mirror without ever blocking the pipeline (the
// mirror is slow and remote and must not hold WAL): when the queue is full
// the wake is dropped and the migrating edges are re-read instead.
func (m *mirror) Wake(id, typ string) {
	select {
	case m.wakes <- wake{id, typ}:
	default:
		m.dropped.Store(true)
	}
}

// rescan wakes every memory with migrating icp-canister edges.
func (m *mirror) rescan(ctx context.Context, mir *icp.Mirror) error {
	rows, err := m.d.pool.Query(ctx, `SELECT DISTINCT memory_id::text, memory_type::text FROM storage_edges
		WHERE backend = 'icp-canister' AND sync_state = 'migrating'`)
	if err != nil {
		return err
	}
	var ws []wake
	for rows.Next() {
		var w wake
		if err := rows.Scan(&w.id, &w.typ); err != nil {
			rows.Close()
			return err
		}
		ws = append(ws, w)
	}
	rows.Close()
	for _, w := range ws {
		if err := mir.Wake(ctx, w.id, w.typ); err != nil {
			return err
		}
	}
	return rows.Err()
}

func (m *mirror) connect(ctx context.Context, log *zap.Logger) (*icp.Client, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.client != nil {
		return m.client, nil
	}
	var c *icp.Client
	op := func() error {
		var err error
		c, err = newICPClient(m.d.cfg, log)
		return err
	}
	notify := func(err error, wait time.Duration) {
		log.Warn("ICP replica unreachable; the mirror waits", zap.Error(err), zap.Duration("retry_in", wait))
	}
	bo := backoff.NewExponentialBackOff(backoff.WithMaxInterval(30*time.Second), backoff.WithMaxElapsedTime(0))
	if err := backoff.RetryNotify(op, backoff.WithContext(bo, ctx), notify); err != nil {
		return nil, err
	}
	m.client = c
	m.checker.s.Store(icp.NewICPStatus(c))
	return c, nil
}

// newICPClient connects the canister client of the configuration.
func newICPClient(c config.Config, log *zap.Logger) (*icp.Client, error) {
	return icp.New(icp.Config{URL: c.ICPURL, CanisterID: c.ICPCanisterID, IdentityFile: c.ICPIdentityFile, FetchRootKey: c.ICPFetchRootKey}, log)
}

// Run mirrors until ctx ends.
func (m *mirror) Run(ctx context.Context) {
	log := m.d.log.With(zap.String("component", "icp"))
	client, err := m.connect(ctx, log)
	if err != nil {
		return // ctx ended
	}
	cfg := m.d.cfg
	prefix := cfg.SubjectPrefix
	mir, err := icp.NewMirror(icp.MirrorConfig{
		Tables:        cfg.Tables,
		MaxAttempts:   cfg.ICPMaxAttempts,
		AssetMaxBytes: cfg.AssetMaxBytes,
		TempDir:       cfg.DataDir,
		Progress: func(id, typ string, done, total int64) {
			body := fmt.Appendf(nil, `{"memory_id":%q,"memory_type":%q,"bytes_done":%d,"bytes_total":%d,"at":%q}`,
				id, typ, done, total, time.Now().UTC().Format(time.RFC3339Nano))
			// Core NATS publish (the stream captures sync.>): progress needs
			// no ack and must not hold up the chunk senders. The SSE hubs of
			// every instance get it back from the stream (internal/ssefeed).
			if err := m.d.nc.Publish(prefix+".sync.progress", body); err != nil {
				log.Debug("publish progress", zap.Error(err))
			}
		},
		// A job left running by a crashed leader is rescued after this
		// (+1 min), so keep it to a bound on one large upload.
		JobTimeout: 15 * time.Minute,
	}, m.d.pool, client, log, m.d.reg)
	if err != nil {
		log.Error("ICP mirror", zap.Error(err))
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if m.dropped.Swap(false) {
					if err := m.rescan(ctx, mir); err != nil && ctx.Err() == nil {
						m.dropped.Store(true)
						log.Warn("re-read migrating icp edges", zap.Error(err))
					}
				}
			case w := <-m.wakes:
				if err := mir.Wake(ctx, w.id, w.typ); err != nil && ctx.Err() == nil {
					log.Warn("wake the ICP mirror (the next start or reconcile re-finds it)", zap.Error(err))
				}
			}
		}
	}()
	if err := mir.Run(ctx); err != nil && ctx.Err() == nil {
		log.Error("ICP mirror stopped", zap.Error(err))
	}
	wg.Wait()
}
