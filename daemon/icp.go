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
	natssink "github.com/edgesync/edgesync/sinks/nats"
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

	mu     sync.Mutex
	client *icp.Client
}

func newMirror(d *Daemon) *mirror {
	return &mirror{d: d, checker: &icpChecker{}, wakes: make(chan wake, 4096)}
}

// Wake queues a memory for the mirror; it blocks only when 4096 wakes are
// already waiting (backpressure on the pipeline, never loss).
func (m *mirror) Wake(ctx context.Context, id, typ string) {
	select {
	case m.wakes <- wake{id, typ}:
	case <-ctx.Done():
	}
}

func (m *mirror) connect(ctx context.Context, log *zap.Logger) (*icp.Client, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.client != nil {
		return m.client, nil
	}
	cfg := m.d.cfg
	var c *icp.Client
	op := func() error {
		var err error
		c, err = icp.New(icp.Config{URL: cfg.ICPURL, CanisterID: cfg.ICPCanisterID, IdentityFile: cfg.ICPIdentityFile, FetchRootKey: cfg.ICPFetchRootKey}, log)
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

// Run mirrors until ctx ends.
func (m *mirror) Run(ctx context.Context) {
	log := m.d.log.With(zap.String("component", "icp"))
	client, err := m.connect(ctx, log)
	if err != nil {
		return // ctx ended
	}
	cfg := m.d.cfg
	prefix := cfg.SubjectPrefix
	hub := m.d.api.Events()
	mir, err := icp.NewMirror(icp.MirrorConfig{
		Tables:        icpTables(cfg),
		MaxAttempts:   cfg.ICPMaxAttempts,
		AssetMaxBytes: cfg.AssetMaxBytes,
		TempDir:       cfg.DataDir,
		Progress: func(id, typ string, done, total int64) {
			body := fmt.Appendf(nil, `{"memory_id":%q,"memory_type":%q,"bytes_done":%d,"bytes_total":%d,"at":%q}`,
				id, typ, done, total, time.Now().UTC().Format(time.RFC3339Nano))
			hub.PublishEvent("progress", "", body)
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if err := natssink.PublishSync(pctx, m.d.js, prefix+".sync.progress", "", body); err != nil {
				log.Debug("publish progress", zap.Error(err))
			}
		},
	}, m.d.pool, client, log, m.d.reg)
	if err != nil {
		log.Error("ICP mirror", zap.Error(err))
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
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

func icpTables(c config.Config) []icp.Table {
	out := make([]icp.Table, 0, len(c.Tables))
	for _, t := range c.Tables {
		out = append(out, icp.Table(t))
	}
	return out
}
