package gallerystatus

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/edgesync/edgesync/domain"
)

// Config tunes the tracker.
type Config struct {
	// SubjectPrefix is the first token of the subject (default "edgesync").
	SubjectPrefix string
	// Debounce is how long the tracker waits after the first change of a
	// burst before recomputing (default 250ms): the latency of a status event.
	Debounce time.Duration
	// MVRefreshEvery is the least time between two refreshes of
	// gallery_presence_mv (default 5s). The MV then lags a change by at most
	// Debounce + MVRefreshEvery + the refresh's own duration.
	MVRefreshEvery time.Duration
	// MaxPending bounds the set of changed keys kept between passes (default
	// 100000); past it the tracker forgets them and rechecks every gallery.
	MaxPending int
	// AdoptEvery is how often the tracker looks for galleries it has no row
	// for (default 1m): a gallery created without items changes no table the
	// CDC stream carries, so nothing else tells the tracker about it, and
	// GET /api/galleries?status= lists only galleries the tracker recorded.
	AdoptEvery time.Duration
}

// adoptBatch bounds the galleries one adopt query returns; the rest come with
// the next ones.
const adoptBatch = 10_000

// PublishFunc publishes one message with a Nats-Msg-Id; the daemon passes its
// JetStream publisher. It returns once the message is durable (acked).
type PublishFunc func(ctx context.Context, subject, msgID string, data []byte) error

// MemoryKey names a memory.
type MemoryKey struct {
	ID   string
	Type string
}

// Event is the body of a `<prefix>.gallery.status` message. OldStatus is null
// the first time the tracker sees a gallery.
type Event struct {
	GalleryID           string    `json:"gallery_id"`
	OldStatus           *string   `json:"old_status"`
	NewStatus           string    `json:"new_status"`
	TotalMemories       int       `json:"total_memories"`
	ICPCompleteMemories int       `json:"icp_complete_memories"`
	ICPComplete         bool      `json:"icp_complete"`
	ICPAny              bool      `json:"icp_any"`
	Version             int64     `json:"version"`
	ChangedAt           time.Time `json:"changed_at"`
}

// Tracker recomputes gallery statuses after changes. Build it with New, run
// it with Run, feed it with MemoriesChanged and GalleriesChanged.
type Tracker struct {
	cfg     Config
	pool    *pgxpool.Pool
	publish PublishFunc
	log     *zap.Logger
	m       *Metrics
	subject string

	mu        sync.Mutex
	memories  map[MemoryKey]struct{}
	galleries map[string]struct{}
	all       bool
	wake      chan struct{}

	lastErrLog time.Time
}

// New builds a tracker; it does no I/O. m may be nil (unregistered metrics).
func New(cfg Config, pool *pgxpool.Pool, publish PublishFunc, logger *zap.Logger, m *Metrics) *Tracker {
	if cfg.SubjectPrefix == "" {
		cfg.SubjectPrefix = "edgesync"
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = 250 * time.Millisecond
	}
	if cfg.MVRefreshEvery <= 0 {
		cfg.MVRefreshEvery = 5 * time.Second
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 100_000
	}
	if cfg.AdoptEvery <= 0 {
		cfg.AdoptEvery = time.Minute
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	return &Tracker{
		cfg:       cfg,
		pool:      pool,
		publish:   publish,
		log:       logger.With(zap.String("component", "gallerystatus")),
		m:         m,
		subject:   cfg.SubjectPrefix + ".gallery.status",
		memories:  map[MemoryKey]struct{}{},
		galleries: map[string]struct{}{},
		wake:      make(chan struct{}, 1),
	}
}

// MemoriesChanged notes memories whose edges or gallery membership changed.
// It never blocks on I/O.
func (t *Tracker) MemoriesChanged(keys ...MemoryKey) {
	if len(keys) == 0 {
		return
	}
	t.mu.Lock()
	if !t.all {
		for _, k := range keys {
			t.memories[k] = struct{}{}
		}
		t.overflowLocked()
	}
	t.mu.Unlock()
	t.signal()
}

// GalleriesChanged notes galleries whose items changed (or that were created
// or deleted). It never blocks on I/O.
func (t *Tracker) GalleriesChanged(ids ...string) {
	if len(ids) == 0 {
		return
	}
	t.mu.Lock()
	if !t.all {
		for _, id := range ids {
			t.galleries[id] = struct{}{}
		}
		t.overflowLocked()
	}
	t.mu.Unlock()
	t.signal()
}

// RecheckAll asks for every gallery to be recomputed, e.g. at start, when
// changes made while no tracker ran may have been missed.
func (t *Tracker) RecheckAll() {
	t.mu.Lock()
	t.all = true
	t.memories, t.galleries = map[MemoryKey]struct{}{}, map[string]struct{}{}
	t.mu.Unlock()
	t.signal()
}

func (t *Tracker) overflowLocked() {
	if len(t.memories)+len(t.galleries) > t.cfg.MaxPending {
		t.all = true
		t.memories, t.galleries = map[MemoryKey]struct{}{}, map[string]struct{}{}
		t.m.overflows.Inc()
	}
}

func (t *Tracker) signal() {
	select {
	case t.wake <- struct{}{}:
	default: // a pass is already due; it will see these keys
	}
}

// Run recomputes after changes and refreshes the MV until ctx ends. Errors
// (database, NATS) are logged and retried with backoff; Run returns nil when
// ctx ends.
func (t *Tracker) Run(ctx context.Context) error {
	var (
		retry       time.Duration
		mvDue       time.Time // zero: no refresh pending
		lastRefresh time.Time
	)
	adopt := time.NewTicker(t.cfg.AdoptEvery)
	defer adopt.Stop()
	for {
		wait := time.Duration(-1)
		if retry > 0 {
			wait = retry
		}
		if !mvDue.IsZero() {
			if d := max(time.Until(mvDue), 0); wait < 0 || d < wait {
				wait = d
			}
		}
		var timer *time.Timer
		var timerC <-chan time.Time
		if wait >= 0 {
			timer = time.NewTimer(wait)
			timerC = timer.C
		}
		select {
		case <-ctx.Done():
			stop(timer)
			return nil
		case <-t.wake:
			stop(timer)
			// Debounce: let the rest of a burst arrive, then do one pass.
			d := time.NewTimer(t.cfg.Debounce)
			select {
			case <-ctx.Done():
				d.Stop()
				return nil
			case <-d.C:
			}
		case <-timerC:
		case <-adopt.C:
			stop(timer)
			if err := t.adopt(ctx); err != nil && ctx.Err() == nil {
				t.logErr("look for galleries without a status row; will retry", err, t.cfg.AdoptEvery)
			}
		}

		touched, err := t.pass(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			retry = min(max(2*retry, 500*time.Millisecond), 30*time.Second)
			t.logErr("recompute gallery statuses; will retry", err, retry)
		} else {
			retry = 0
		}
		if touched && mvDue.IsZero() {
			mvDue = lastRefresh.Add(t.cfg.MVRefreshEvery)
		}
		if !mvDue.IsZero() && !time.Now().Before(mvDue) {
			if err := t.refresh(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				mvDue = time.Now().Add(t.cfg.MVRefreshEvery)
				t.logErr("refresh gallery_presence_mv; will retry", err, t.cfg.MVRefreshEvery)
			} else {
				lastRefresh, mvDue = time.Now(), time.Time{}
			}
		}
	}
}

func stop(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// logErr logs at most one error per 10s, so a database outage does not flood
// the log.
func (t *Tracker) logErr(msg string, err error, retry time.Duration) {
	t.m.errors.Inc()
	if time.Since(t.lastErrLog) < 10*time.Second {
		return
	}
	t.lastErrLog = time.Now()
	t.log.Warn(msg, zap.Error(err), zap.Duration("retry_in", retry))
}

// adopt queues galleries that have no status row yet. The anti-join reads
// every gallery id once per AdoptEvery (a hash join: about a second per
// million galleries at most); the leader alone runs it.
func (t *Tracker) adopt(ctx context.Context) error {
	rows, err := t.pool.Query(ctx, `SELECT g.id::text FROM galleries g
		WHERE NOT EXISTS (SELECT 1 FROM edgesync_gallery_status s WHERE s.gallery_id = g.id)
		LIMIT $1`, adoptBatch)
	if err != nil {
		return fmt.Errorf("galleries without a status row: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("galleries without a status row: %w", err)
	}
	if len(ids) > 0 {
		t.GalleriesChanged(ids...)
	}
	return nil
}

// take swaps out the pending set.
func (t *Tracker) take() (map[MemoryKey]struct{}, map[string]struct{}, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	mems, gals, all := t.memories, t.galleries, t.all
	t.memories, t.galleries, t.all = map[MemoryKey]struct{}{}, map[string]struct{}{}, false
	return mems, gals, all
}

// requeue puts galleries back after a failed pass.
func (t *Tracker) requeue(ids []string, all bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if all {
		t.all = true
		return
	}
	for _, id := range ids {
		t.galleries[id] = struct{}{}
	}
	t.overflowLocked()
}

const chunk = 500

// pass recomputes the galleries of the pending changes. touched reports
// whether there was anything to do (so the MV needs a refresh).
func (t *Tracker) pass(ctx context.Context) (touched bool, err error) {
	mems, gals, all := t.take()
	if len(mems) == 0 && len(gals) == 0 && !all {
		return false, nil
	}
	ids, err := t.resolve(ctx, mems, gals, all)
	if err != nil {
		if all {
			t.requeue(nil, true)
		} else {
			// Keep the memories as they were: their galleries are unknown.
			t.mu.Lock()
			for k := range mems {
				t.memories[k] = struct{}{}
			}
			t.mu.Unlock()
			t.requeue(keys(gals), false)
		}
		return true, err
	}
	for i := 0; i < len(ids); i += chunk {
		part := ids[i:min(i+chunk, len(ids))]
		if err := t.sync(ctx, part); err != nil {
			t.requeue(ids[i:], false)
			return true, err
		}
	}
	return true, nil
}

func keys[K comparable](m map[K]struct{}) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// resolve turns changed memories into the galleries that hold them (through
// ix_gallery_items_memory) and adds the changed galleries.
func (t *Tracker) resolve(ctx context.Context, mems map[MemoryKey]struct{}, gals map[string]struct{}, all bool) ([]string, error) {
	if all {
		rows, err := t.pool.Query(ctx, `SELECT id::text FROM galleries
			UNION SELECT gallery_id::text FROM edgesync_gallery_status`)
		if err != nil {
			return nil, fmt.Errorf("list galleries: %w", err)
		}
		return pgx.CollectRows(rows, pgx.RowTo[string])
	}
	set := make(map[string]struct{}, len(gals))
	for g := range gals {
		if domain.CanonicalUUID(g) {
			set[g] = struct{}{}
		}
	}
	if len(mems) > 0 {
		ids := make([]string, 0, len(mems))
		types := make([]string, 0, len(mems))
		for k := range mems {
			if domain.CanonicalUUID(k.ID) && validType(k.Type) {
				ids, types = append(ids, k.ID), append(types, k.Type)
			}
		}
		// Both arrays go as text[] (pgx sends them in binary, element by
		// element) and are cast per row by Postgres: as uuid[] and an enum
		// array, pgx would write them as array literals, quoting every
		// element, which cost the daemon more than the query cost Postgres
		// while a backlog of 100,000 changes streamed.
		rows, err := t.pool.Query(ctx, `SELECT DISTINCT gi.gallery_id::text
			FROM unnest($1::text[], $2::text[]) AS k(id, typ)
			JOIN gallery_items gi ON gi.memory_id = k.id::uuid AND gi.memory_type = k.typ::memory_type_t`, ids, types)
		if err != nil {
			return nil, fmt.Errorf("galleries of changed memories: %w", err)
		}
		gs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("galleries of changed memories: %w", err)
		}
		for _, g := range gs {
			set[g] = struct{}{}
		}
	}
	return keys(set), nil
}

type row struct {
	status            string
	total, icpAll     int
	icpAny            bool
	migrating, failed int
	created           *time.Time // the gallery's created_at (null in rows from before 00010)
	version           int64
}

// counted reports whether the stored row r holds cur's counts (all but the
// status).
func (r row) counted(cur row) bool {
	return r.total == cur.total && r.icpAll == cur.icpAll && r.icpAny == cur.icpAny &&
		r.migrating == cur.migrating && r.failed == cur.failed && sameTime(r.created, cur.created)
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(*b)
}

// liveSQL reads the galleries' status and counts from gallery_presence, and
// how many of each gallery's items have an edge migrating or failed. That
// count reads the gallery's non-idle edges only: through ix_edges_not_idle
// (few edges, usually) or each item's edges through ix_edges_memory, as the
// planner finds cheaper. created_at is read through to_jsonb so that an app's
// galleries table without that column (edgesync needs only id) still gets
// its statuses tracked; its galleries then have no created_at copy and are
// not listed by status.
const liveSQL = `
SELECT gp.gallery_id::text, gp.status, gp.total_memories, gp.icp_complete_memories, gp.icp_any,
       sc.migrating, sc.failed, (to_jsonb(g) ->> 'created_at')::timestamptz
FROM gallery_presence gp
JOIN galleries g ON g.id = gp.gallery_id
CROSS JOIN LATERAL (` + SyncCountsSQL + `) sc
WHERE gp.gallery_id = ANY($1::uuid[])`

// SyncCountsSQL counts the items of gallery gp.gallery_id that have any edge
// migrating, and those that have any edge failed (an item with both counts in
// both). The API uses it, with the same alias, for galleries the tracker has
// no row for yet, so both count alike.
const SyncCountsSQL = `
	SELECT count(*) FILTER (WHERE x.migrating)::int AS migrating, count(*) FILTER (WHERE x.failed)::int AS failed
	FROM (
		SELECT bool_or(e.sync_state = 'migrating') AS migrating, bool_or(e.sync_state = 'failed') AS failed
		FROM gallery_items gi
		JOIN storage_edges e ON e.memory_id = gi.memory_id AND e.memory_type = gi.memory_type
		WHERE gi.gallery_id = gp.gallery_id AND e.sync_state <> 'idle'
		GROUP BY gi.memory_id, gi.memory_type
	) x`

// sync compares the live status of some galleries with the stored one and
// publishes each change before storing it.
func (t *Tracker) sync(ctx context.Context, ids []string) error {
	batch := &pgx.Batch{}
	batch.Queue(liveSQL, ids)
	batch.Queue(`SELECT gallery_id::text, status, total_memories, icp_complete_memories, icp_any,
			migrating, failed, gallery_created_at, version
		FROM edgesync_gallery_status WHERE gallery_id = ANY($1::uuid[])`, ids)
	live, stored := map[string]row{}, map[string]row{}
	err := func() error {
		br := t.pool.SendBatch(ctx, batch)
		defer br.Close()
		rows, err := br.Query()
		if err != nil {
			return err
		}
		var id string
		var r row
		if _, err := pgx.ForEachRow(rows, []any{&id, &r.status, &r.total, &r.icpAll, &r.icpAny, &r.migrating, &r.failed, &r.created}, func() error {
			live[id] = r
			r.created = nil // scanned into a new value next row
			return nil
		}); err != nil {
			return err
		}
		rows, err = br.Query()
		if err != nil {
			return err
		}
		r = row{}
		_, err = pgx.ForEachRow(rows, []any{&id, &r.status, &r.total, &r.icpAll, &r.icpAny, &r.migrating, &r.failed, &r.created, &r.version}, func() error {
			stored[id] = r
			r.created = nil
			return nil
		})
		return err
	}()
	if err != nil {
		return fmt.Errorf("read gallery statuses: %w", err)
	}

	var unchanged, gone []string
	for _, id := range ids {
		cur, exists := live[id]
		old, known := stored[id]
		switch {
		case !exists:
			if known {
				gone = append(gone, id)
			}
		case known && old.status == cur.status:
			if !old.counted(cur) {
				if _, err := t.pool.Exec(ctx, `UPDATE edgesync_gallery_status SET total_memories = $2,
					icp_complete_memories = $3, icp_any = $4, migrating = $5, failed = $6, gallery_created_at = $7,
					checked_at = now() WHERE gallery_id = $1`,
					id, cur.total, cur.icpAll, cur.icpAny, cur.migrating, cur.failed, cur.created); err != nil {
					return fmt.Errorf("store gallery %s counts: %w", id, err)
				}
			} else {
				unchanged = append(unchanged, id)
			}
		default:
			if err := t.change(ctx, id, cur, old, known); err != nil {
				return err
			}
		}
	}
	if len(unchanged) > 0 {
		if _, err := t.pool.Exec(ctx, `UPDATE edgesync_gallery_status SET checked_at = now() WHERE gallery_id = ANY($1::uuid[])`, unchanged); err != nil {
			return fmt.Errorf("mark galleries checked: %w", err)
		}
	}
	// A deleted gallery has no status; forget it without an event.
	if len(gone) > 0 {
		if _, err := t.pool.Exec(ctx, `DELETE FROM edgesync_gallery_status WHERE gallery_id = ANY($1::uuid[])`, gone); err != nil {
			return fmt.Errorf("forget deleted galleries: %w", err)
		}
	}
	return nil
}

// change publishes one status change, then stores it.
func (t *Tracker) change(ctx context.Context, id string, cur, old row, known bool) error {
	ev := Event{
		GalleryID:           id,
		NewStatus:           cur.status,
		TotalMemories:       cur.total,
		ICPCompleteMemories: cur.icpAll,
		ICPComplete:         cur.total > 0 && cur.icpAll == cur.total,
		ICPAny:              cur.icpAny,
		Version:             old.version + 1,
		ChangedAt:           time.Now().UTC(),
	}
	if known {
		s := old.status
		ev.OldStatus = &s
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	// The new status is part of the id: if a publish went out but its
	// version was not stored, and the status then changed again, the next
	// publish reuses the version but not the id, so it is not dropped as a
	// duplicate.
	msgID := "gallery/" + id + "/" + strconv.FormatInt(ev.Version, 10) + "/" + ev.NewStatus
	if err := t.publish(ctx, t.subject, msgID, data); err != nil {
		return fmt.Errorf("publish %s: %w", msgID, err)
	}
	t.m.events.Inc()
	_, err = t.pool.Exec(ctx, `INSERT INTO edgesync_gallery_status AS s
			(gallery_id, status, total_memories, icp_complete_memories, icp_any, migrating, failed, gallery_created_at,
			 version, changed_at, checked_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now())
		ON CONFLICT (gallery_id) DO UPDATE SET status = EXCLUDED.status, total_memories = EXCLUDED.total_memories,
			icp_complete_memories = EXCLUDED.icp_complete_memories, icp_any = EXCLUDED.icp_any,
			migrating = EXCLUDED.migrating, failed = EXCLUDED.failed, gallery_created_at = EXCLUDED.gallery_created_at,
			version = EXCLUDED.version, changed_at = EXCLUDED.changed_at, checked_at = now()`,
		id, cur.status, cur.total, cur.icpAll, cur.icpAny, cur.migrating, cur.failed, cur.created, ev.Version, ev.ChangedAt)
	if err != nil {
		return fmt.Errorf("store gallery %s status: %w", id, err)
	}
	t.log.Debug("gallery status changed", zap.String("gallery_id", id), zap.Stringp("old", ev.OldStatus), zap.String("new", ev.NewStatus))
	return nil
}

// refresh refreshes gallery_presence_mv and records when, in one transaction:
// now() is the transaction's start, which is no later than the snapshot the
// refresh read, so refreshed_at never overstates freshness.
func (t *Tracker) refresh(ctx context.Context) error {
	start := time.Now()
	err := pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT refresh_gallery_presence()`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO edgesync_mv_refresh (name, refreshed_at, duration_ms)
			VALUES ('gallery_presence_mv', now(), $1)
			ON CONFLICT (name) DO UPDATE SET refreshed_at = EXCLUDED.refreshed_at, duration_ms = EXCLUDED.duration_ms`,
			time.Since(start).Milliseconds())
		return err
	})
	if err != nil {
		return fmt.Errorf("refresh gallery_presence_mv: %w", err)
	}
	t.m.refresh.Observe(time.Since(start).Seconds())
	return nil
}

// Refresh refreshes gallery_presence_mv now (for tools and tests; Run does it
// on its own schedule).
func (t *Tracker) Refresh(ctx context.Context) error { return t.refresh(ctx) }

func validType(s string) bool {
	switch s {
	case domain.MemoryImage, domain.MemoryVideo, domain.MemoryNote, domain.MemoryDocument, domain.MemoryAudio:
		return true
	}
	return false
}
