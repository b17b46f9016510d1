package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/domain"
	"github.com/edgesync/edgesync/sinks/edges"
	natssink "github.com/edgesync/edgesync/sinks/nats"
)

// ErrAbandon, as the cause of Run's context, stops a session without
// draining: the caller lost the leader lock, so another instance may read
// the slot already.
var ErrAbandon = errors.New("leadership lost")

// Config is what one CDC pipeline needs.
type Config struct {
	DatabaseURL string
	Slot        string
	Publication string
	Stream      string
	// StreamReplicas and StreamMaxBytes are used when the stream is created.
	StreamReplicas    int
	StreamMaxBytes    int64
	SubjectPrefix     string
	Tables            []domain.Table
	SnapshotEvents    bool
	DeleteICPEdges    bool
	HeartbeatInterval time.Duration
	// StatusInterval is how often the reader reports its position; 0 derives
	// it from the server's wal_sender_timeout (a quarter of it, at most 2 s).
	StatusInterval time.Duration
	SnapshotChunk  int
	// DrainTimeout bounds how long shutdown waits for in-flight changes.
	DrainTimeout time.Duration
	// MemoryBudget bounds the bytes of decoded changes waiting for the
	// consumer (a quarter) and of events waiting for JetStream's ack (the
	// rest), so a stalled NATS slows the reader instead of growing the heap.
	// 0: 16 MiB.
	MemoryBudget int64
}

// Hooks let other components follow the stream; each must return quickly.
type Hooks struct {
	// EdgeChanged sees every storage_edges event (its id and JSON envelope).
	EdgeChanged func(ev EdgeEvent)
	// GalleryChanged is called with a gallery whose items changed ("" = all).
	GalleryChanged func(galleryID string)
	// SlotLost is called after a lost slot was re-created and re-snapshotted.
	SlotLost func()
}

// EdgeEvent is one storage_edges change as the pipeline published it.
type EdgeEvent struct {
	ID         string
	Data       []byte
	Op         cdc.Op
	MemoryID   string
	MemoryType string
	Backend    string
	Artifact   string
	SyncState  string // after the change; "" on delete
}

// Pipeline is one leader's CDC session factory: Run sets up the slot, takes
// the initial snapshot when needed and streams until an error.
type Pipeline struct {
	cfg     Config
	pool    *pgxpool.Pool
	js      jetstream.JetStream
	log     *zap.Logger
	metrics *Metrics
	hooks   Hooks
	// storage_edges and gallery_items as pgoutput names them (prepare).
	edgesTable, itemsTable string
}

func (p *Pipeline) routerConfig() RouterConfig {
	return RouterConfig{Slot: p.cfg.Slot, SubjectPrefix: p.cfg.SubjectPrefix, Tables: p.cfg.Tables,
		EdgesTable: p.edgesTable, ItemsTable: p.itemsTable}
}

// New returns a pipeline; it connects nothing.
func New(cfg Config, pool *pgxpool.Pool, js jetstream.JetStream, m *Metrics, hooks Hooks, log *zap.Logger) *Pipeline {
	if cfg.SnapshotChunk <= 0 {
		cfg.SnapshotChunk = 5000
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 5 * time.Second
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 30 * time.Second
	}
	if cfg.MemoryBudget <= 0 {
		cfg.MemoryBudget = 16 << 20
	}
	return &Pipeline{cfg: cfg, pool: pool, js: js, log: log, metrics: m, hooks: hooks}
}

// memoryTypes are the memory types of the pipeline's tables.
func (p *Pipeline) memoryTypes() []string {
	out := make([]string, 0, len(p.cfg.Tables))
	for _, t := range p.cfg.Tables {
		out = append(out, t.MemoryType)
	}
	return out
}

// publishedTables are the tables of the publication: memory tables,
// gallery_items and storage_edges.
func (p *Pipeline) publishedTables() []string {
	var out []string
	for _, t := range p.cfg.Tables {
		out = append(out, t.Name)
	}
	return append(out, domain.GalleryItemsTable, domain.EdgesTable)
}

// Run is one session. It returns when ctx ends (nil, after draining) or on
// the first error.
func (p *Pipeline) Run(ctx context.Context) error {
	slot, st, lost, err := p.prepare(ctx)
	if err != nil {
		return err
	}
	rc, err := cdc.ConnectReplication(ctx, p.cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("replication connection: %w", err)
	}
	defer rc.Close(context.Background())
	s, err := p.newSession(ctx)
	if err != nil {
		return err
	}
	defer s.stop()
	if slot.Exists {
		// A replay re-reads what was published after the last confirmed
		// position. Skip what the stream already holds, however long ago it
		// was stored: the duplicate window is only a safety net. (A slot
		// created now has nothing to replay.)
		stored, err := natssink.StoredFrom(ctx, p.js, p.cfg.Stream, natssink.ChangeSubjects(p.cfg.SubjectPrefix),
			natssink.MemorySubjects(p.cfg.SubjectPrefix, p.memoryTypes()), p.cfg.Slot, slot.ConfirmedFlush)
		if err != nil {
			return s.fail(fmt.Errorf("learn what the stream holds of the replay: %w", err))
		}
		if len(stored) > 0 {
			p.log.Info("events of the replay already in the stream are not published again",
				zap.Int("stored", len(stored)), zap.String("from", slot.ConfirmedFlush.String()))
		}
		s.pub.Skip(stored)
	}
	start, err := s.setup(ctx, rc, slot, st)
	if err != nil || ctx.Err() != nil {
		return s.fail(err)
	}
	if lost && p.hooks.SlotLost != nil {
		p.hooks.SlotLost()
	}
	return s.stream(ctx, rc, start)
}

// prepare checks the server, the publication and the slot, and notices a
// lost slot (reporting it loudly and resetting the pipeline state).
func (p *Pipeline) prepare(ctx context.Context) (slot cdc.SlotInfo, st state, lost bool, err error) {
	if err = cdc.CheckServer(ctx, p.pool, p.cfg.Slot); err != nil {
		return
	}
	if err = cdc.EnsurePublication(ctx, p.pool, p.cfg.Publication, p.publishedTables()); err != nil {
		return
	}
	// storage_edges and gallery_items are where the search path finds
	// them, not necessarily in public.
	if p.edgesTable, err = cdc.ResolveTable(ctx, p.pool, domain.EdgesTable); err != nil {
		return
	}
	if p.itemsTable, err = cdc.ResolveTable(ctx, p.pool, domain.GalleryItemsTable); err != nil {
		return
	}
	if err = p.warnForeignTables(ctx); err != nil {
		return
	}
	if err = p.warnOverlappingPipelines(ctx); err != nil {
		return
	}
	if st, err = loadState(ctx, p.pool, p.cfg.Slot); err != nil {
		return
	}
	var dbName string
	if err = p.pool.QueryRow(ctx, "SELECT current_database()").Scan(&dbName); err != nil {
		return
	}
	claim, err := cdc.ClaimSlot(ctx, p.pool, p.cfg.Slot, dbName, st.ConfirmedLSN != 0 || st.SnapshotState != "pending")
	if err != nil {
		return slot, st, false, err
	}
	if claim.Terminated != 0 {
		p.log.Warn("the slot was still held by another walsender (a previous leader); terminated it", zap.Int("pid", claim.Terminated))
	}
	slot, lost = claim.Slot, claim.Lost
	if lost {
		p.metrics.SlotLost.Inc()
		p.log.Error("replication slot lost: re-creating it, re-snapshotting and requesting a reconcile; changes made while it was gone are recovered by the snapshot",
			zap.String("slot", p.cfg.Slot), zap.String("last_confirmed_lsn", st.ConfirmedLSN.String()))
		p.publishSlotLost(ctx, st.ConfirmedLSN)
		if err = resetState(ctx, p.pool, p.cfg.Slot); err != nil {
			return
		}
		st = state{SnapshotState: "pending"}
	}
	return slot, st, lost, nil
}

// session is one run's running parts. The sinks outlive the reader on
// shutdown so they can drain; the reader and the consumer stop first.
type session struct {
	p              *Pipeline
	pub            *natssink.Publisher
	queue          *cdc.Budget // decoded changes between reader and consumer
	writer         *edges.Writer
	batcher        *edges.Batcher
	sinkCtx        context.Context
	stopSinks      context.CancelFunc
	readCtx        context.Context
	stopRead       context.CancelFunc
	errc           chan error
	sinks, readers sync.WaitGroup
}

func (p *Pipeline) newSession(ctx context.Context) (*session, error) {
	queue := cdc.NewBudget(p.cfg.MemoryBudget / 4)
	pub := natssink.NewPublisher(p.js, cdc.NewBudget(p.cfg.MemoryBudget-queue.Total()))
	if _, err := natssink.EnsureStream(ctx, p.js, natssink.StreamConfig{Name: p.cfg.Stream, SubjectPrefix: p.cfg.SubjectPrefix,
		Replicas: p.cfg.StreamReplicas, MaxBytes: p.cfg.StreamMaxBytes, Notify: func(msg string) { p.log.Warn(msg) }}); err != nil {
		return nil, err
	}
	s := &session{p: p, pub: pub, queue: queue, errc: make(chan error, 8)}
	s.writer = edges.NewWriter(p.pool, edges.Config{DeleteICPEdges: p.cfg.DeleteICPEdges})
	s.batcher = edges.NewBatcher(s.writer, p.countEdges)
	s.sinkCtx, s.stopSinks = context.WithCancel(context.WithoutCancel(ctx))
	s.readCtx, s.stopRead = context.WithCancel(context.WithoutCancel(ctx))
	s.spawn(&s.sinks, func() error { return pub.Run(s.sinkCtx) })
	s.spawn(&s.sinks, func() error { return s.batcher.Run(s.sinkCtx) })
	return s, nil
}

// spawn runs f; its error (other than a cancellation) ends the session.
func (s *session) spawn(wg *sync.WaitGroup, f func() error) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := f(); err != nil && !errors.Is(err, context.Canceled) {
			s.errc <- err
		}
	}()
}

func (s *session) stop() {
	s.stopRead()
	s.stopSinks()
}

// fail stops everything at once and returns err.
func (s *session) fail(err error) error {
	s.stop()
	s.readers.Wait()
	s.sinks.Wait()
	if errors.Is(err, natssink.ErrPublish) {
		s.p.metrics.PublishErrors.Inc()
	}
	return err
}

// setup creates the slot and takes the initial snapshot, or resumes an
// interrupted one, and returns where streaming starts. It runs on the
// caller's goroutine; a sink failure meanwhile cancels it.
func (s *session) setup(ctx context.Context, rc *pgconn.PgConn, slot cdc.SlotInfo, st state) (cdc.LSN, error) {
	p := s.p
	setupCtx, setupDone := context.WithCancel(ctx)
	defer setupDone()
	go func() {
		select {
		case err := <-s.errc:
			s.errc <- err
			setupDone()
		case <-setupCtx.Done():
		}
	}()
	switch {
	case !slot.Exists:
		res, err := cdc.CreateSlot(setupCtx, rc, p.cfg.Slot)
		if err != nil {
			return 0, err
		}
		cp, _ := parseLSN(res.ConsistentPoint)
		p.log.Info("created replication slot; taking the initial snapshot in its exported snapshot",
			zap.String("slot", p.cfg.Slot), zap.String("consistent_point", res.ConsistentPoint))
		if err := markSlotCreated(setupCtx, p.pool, p.cfg.Slot, cp); err != nil {
			return 0, err
		}
		return cp, p.snapshot(setupCtx, s.writer, s.pub, res.SnapshotName, cp, state{SnapshotState: "pending"})
	case st.SnapshotState != "done":
		// Interrupted snapshot: its exported snapshot is gone. Backfilling
		// from the current rows and then streaming the slot from its start
		// still converges (DESIGN decision 5).
		p.log.Warn("resuming an interrupted initial snapshot from the current rows", zap.String("slot", p.cfg.Slot),
			zap.String("table", st.SnapshotTable))
		return slot.ConfirmedFlush, p.snapshot(setupCtx, s.writer, s.pub, "", slot.ConfirmedFlush, st)
	}
	return slot.ConfirmedFlush, nil
}

// stream reads the slot from start until ctx ends or something fails, then
// drains in order: stop reading WAL, let the sinks finish what was received,
// confirm the last durable LSN, stop the sinks.
func (s *session) stream(ctx context.Context, rc *pgconn.PgConn, start cdc.LSN) error {
	p := s.p
	tracker := cdc.NewTracker(start)
	reader := cdc.NewReader(cdc.ReaderConfig{Slot: p.cfg.Slot, Publication: p.cfg.Publication, StatusInterval: p.statusInterval(ctx), Budget: s.queue}, rc, tracker, p.log)
	items := make(chan cdc.Item, 1024)
	s.spawn(&s.readers, func() error { return reader.Run(s.readCtx, 0, items) })
	s.spawn(&s.readers, func() error { return p.consume(s.readCtx, items, tracker, s.queue, s.batcher, s.pub) })
	s.spawn(&s.readers, func() error { return p.heartbeat(s.readCtx) })
	s.spawn(&s.readers, func() error { return p.recordProgress(s.readCtx, tracker) })
	p.log.Info("streaming", zap.String("slot", p.cfg.Slot), zap.String("from", start.String()))

	select {
	case err := <-s.errc:
		return s.fail(err)
	case <-ctx.Done():
	}
	if errors.Is(context.Cause(ctx), ErrAbandon) {
		// Another instance may lead already: stop at once instead of
		// draining, so two batchers never write side by side; the next
		// leader replays whatever this session had not confirmed.
		p.log.Warn("leadership lost: stopping the session without draining")
		return s.fail(nil)
	}
	s.stopRead()
	s.readers.Wait()
	deadline := time.Now().Add(p.cfg.DrainTimeout)
	for !tracker.Drained() && time.Now().Before(deadline) {
		select {
		case err := <-s.errc:
			return s.fail(err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	s.stopSinks()
	s.sinks.Wait()
	fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := reader.SendFinalStatus(fctx); err != nil {
		p.log.Warn("final standby status", zap.Error(err))
	}
	_ = saveConfirmed(fctx, p.pool, p.cfg.Slot, tracker.Confirmed())
	p.log.Info("pipeline drained", zap.String("confirmed_lsn", tracker.Confirmed().String()), zap.Bool("complete", tracker.Drained()))
	return nil
}

// statusInterval keeps standby status updates well inside the server's
// wal_sender_timeout: while the consumer is slow the reader does not read
// the server's reply requests, so only the timer keeps the session alive.
func (p *Pipeline) statusInterval(ctx context.Context) time.Duration {
	if p.cfg.StatusInterval > 0 {
		return p.cfg.StatusInterval
	}
	const most = 2 * time.Second
	var ms int64
	err := p.pool.QueryRow(ctx, `SELECT setting::bigint FROM pg_settings WHERE name = 'wal_sender_timeout'`).Scan(&ms)
	if err != nil || ms <= 0 { // unreadable, or 0: the timeout is off
		return most
	}
	return min(most, max(100*time.Millisecond, time.Duration(ms)*time.Millisecond/4))
}

func (p *Pipeline) countEdges(st edges.Stats) {
	if st.Created > 0 {
		p.metrics.EdgesWritten.WithLabelValues("created").Add(float64(st.Created))
	}
	if st.Updated > 0 {
		p.metrics.EdgesWritten.WithLabelValues("updated").Add(float64(st.Updated))
	}
	if st.Deleted > 0 {
		p.metrics.EdgesWritten.WithLabelValues("deleted").Add(float64(st.Deleted))
	}
}

// warnOverlappingPipelines logs memory tables that another edgesync
// pipeline's publication (one that also carries storage_edges) publishes as
// well: when both pipelines run, every change of such a table is published
// twice, once by each (docs/scaling.md: move tables, do not copy them).
// A leftover publication that no slot reads triggers it too, hence a
// warning, not a refusal.
func (p *Pipeline) warnOverlappingPipelines(ctx context.Context) error {
	rows, err := p.pool.Query(ctx, `SELECT o.pubname, o.schemaname || '.' || o.tablename
		FROM pg_publication_tables o
		JOIN pg_publication_tables m ON m.pubname = $1 AND m.schemaname = o.schemaname AND m.tablename = o.tablename
		WHERE o.pubname <> $1
		  AND o.schemaname || '.' || o.tablename NOT IN ($2, $3)
		  AND EXISTS (SELECT 1 FROM pg_publication_tables e
		              WHERE e.pubname = o.pubname AND e.schemaname || '.' || e.tablename = $2)
		ORDER BY 1, 2`, p.cfg.Publication, p.edgesTable, p.itemsTable)
	if err != nil {
		return fmt.Errorf("list other pipelines' publications: %w", err)
	}
	type overlap struct{ pub, table string }
	found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (overlap, error) {
		var o overlap
		return o, r.Scan(&o.pub, &o.table)
	})
	if err != nil {
		return fmt.Errorf("list other pipelines' publications: %w", err)
	}
	for _, o := range found {
		p.log.Warn("another pipeline's publication also has this memory table: while both run, each of its changes is published twice; map every table in one pipeline only (EDGESYNC_TABLES) and drop it from the other publication",
			zap.String("publication", p.cfg.Publication), zap.String("other_publication", o.pub), zap.String("table", o.table))
	}
	return nil
}

// warnForeignTables logs tables in the publication that edgesync does not
// handle, e.g. one added by mistake: their changes are skipped.
func (p *Pipeline) warnForeignTables(ctx context.Context) error {
	rows, err := p.pool.Query(ctx, `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1`, p.cfg.Publication)
	if err != nil {
		return fmt.Errorf("list publication tables: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	r := NewRouter(p.routerConfig())
	for _, n := range names {
		if !r.Known(n) {
			p.log.Warn("publication contains a table edgesync does not handle; its changes are skipped (remove it: ALTER PUBLICATION ... DROP TABLE)",
				zap.String("publication", p.cfg.Publication), zap.String("table", n))
		}
	}
	return nil
}

func (p *Pipeline) heartbeat(ctx context.Context) error {
	t := time.NewTicker(p.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			// A transactional message flows through the slot like any
			// transaction, so an idle slot keeps moving (and proves the path).
			if _, err := p.pool.Exec(ctx, "SELECT pg_logical_emit_message(true, 'edgesync_heartbeat', now()::text)"); err != nil && ctx.Err() == nil {
				p.log.Warn("heartbeat", zap.Error(err))
			}
		}
	}
}

// recordProgress keeps the confirmed LSN in the state table (to notice a lost
// slot) and the lag metrics current.
func (p *Pipeline) recordProgress(ctx context.Context, tr *cdc.Tracker) error {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	var last cdc.LSN
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		c := tr.Confirmed()
		p.metrics.ConfirmedLSN.Set(float64(c))
		p.metrics.InFlight.Set(float64(tr.InFlight()))
		if c != last {
			if err := saveConfirmed(ctx, p.pool, p.cfg.Slot, c); err != nil && ctx.Err() == nil {
				p.log.Warn("record confirmed lsn", zap.Error(err))
			}
			last = c
		}
		if s, err := cdc.ReadSlot(ctx, p.pool, p.cfg.Slot); err == nil && s.Exists {
			p.metrics.SlotLag.Set(float64(s.LagBytes))
		}
	}
}

// publishSlotLost tells consumers that changes may be missing from the
// stream. It is the one event a consumer cannot afford to miss, so it is
// retried until JetStream stores it (or ctx ends), before the pipeline
// state is reset: with NATS down nothing else can be published either. Its
// msg id (<slot>/slot_lost/<last confirmed LSN>) makes the retries, and a
// repeat after a crash before the reset, one stored event.
func (p *Pipeline) publishSlotLost(ctx context.Context, last cdc.LSN) {
	body, err := json.Marshal(cdc.SlotLostEvent{Event: "slot_lost", Slot: p.cfg.Slot, LastConfirmedLSN: last.String(), DetectedAt: time.Now().UTC()})
	if err != nil {
		return
	}
	subject := domain.Subjects{Prefix: p.cfg.SubjectPrefix}.SlotLost()
	id := p.cfg.Slot + "/slot_lost/" + last.String()
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 250*time.Millisecond, 10*time.Second, 0 // until stored or ctx ends
	attempt := 0
	_ = backoff.RetryNotify(func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return natssink.PublishSync(cctx, p.js, subject, id, body)
	}, backoff.WithContext(b, ctx), func(err error, _ time.Duration) {
		if attempt++; attempt == 1 || attempt%20 == 0 {
			p.log.Warn("publish slot_lost event; retrying until NATS stores it", zap.Int("attempt", attempt), zap.Error(err))
		}
	})
}

func parseLSN(s string) (cdc.LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("bad lsn %q", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, err
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, err
	}
	return cdc.LSN(h<<32 | l), nil
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
