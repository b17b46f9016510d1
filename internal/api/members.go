package api

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgesync/edgesync/domain"
)

var (
	errNoGallery      = errors.New("no such gallery")
	errMembersBudget  = errors.New("the gallery-membership budget of this instance is spent")
	memberLoadTimeout = 5 * time.Second
)

// memberKey is a memory as the stream's gallery filter knows it (17 bytes,
// not two strings: a pod may hold hundreds of thousands).
type memberKey = domain.MemoryKey

// galleryMembers is the item set of one gallery that stream clients filter
// on, shared by all of this instance's clients of that gallery. The set is
// replaced whole on refresh, so the hub reads it without a lock.
type galleryMembers struct {
	id  string
	set atomic.Pointer[map[memberKey]struct{}]

	// Guarded by membership.mu.
	refs       int
	size       int
	loadedAt   time.Time
	refreshing bool
}

func (g *galleryMembers) has(k memberKey) bool {
	_, ok := (*g.set.Load())[k]
	return ok
}

// membership holds the item sets of the galleries that this instance's
// stream clients filter on. Its memory is bounded by budget items in all
// (each about 40 bytes with the map's overhead); a gallery is held once
// however many clients watch it and dropped with its last client.
//
// gallery_items changes are not in the event stream (every instance reads
// only the stream; only the leader sees the CDC changes), so a set is
// reloaded when it is older than every, at most once per interval per
// gallery, driven by its clients' handlers: a memory added to a gallery
// reaches its clients' filter within that interval.
type membership struct {
	pool   *pgxpool.Pool
	budget int
	every  time.Duration

	mu        sync.Mutex
	galleries map[string]*galleryMembers
	entries   int
}

func newMembership(pool *pgxpool.Pool, budget int, every time.Duration) *membership {
	return &membership{pool: pool, budget: budget, every: every, galleries: map[string]*galleryMembers{}}
}

// acquire returns the gallery's shared set, loading it for the first client.
// It fails with errNoGallery for a gallery that does not exist and with
// errMembersBudget when holding it would pass the budget.
func (m *membership) acquire(ctx context.Context, id string) (*galleryMembers, error) {
	m.mu.Lock()
	if g := m.galleries[id]; g != nil {
		g.refs++
		m.mu.Unlock()
		return g, nil
	}
	room := m.budget - m.entries
	m.mu.Unlock()
	if room <= 0 {
		return nil, errMembersBudget
	}
	set, err := m.load(ctx, id, room)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if g := m.galleries[id]; g != nil { // another client loaded it meanwhile
		g.refs++
		return g, nil
	}
	if m.entries+len(set) > m.budget {
		return nil, errMembersBudget
	}
	g := &galleryMembers{id: id, refs: 1, size: len(set), loadedAt: time.Now()}
	g.set.Store(&set)
	m.galleries[id] = g
	m.entries += len(set)
	return g, nil
}

func (m *membership) release(g *galleryMembers) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g.refs--
	if g.refs == 0 && m.galleries[g.id] == g {
		delete(m.galleries, g.id)
		m.entries -= g.size
	}
}

// refresh reloads g when it is older than the interval and no other client
// is reloading it. A reload that would pass the budget keeps the old set (and
// says so); a gallery that was deleted has no members any more.
func (m *membership) refresh(ctx context.Context, g *galleryMembers) error {
	m.mu.Lock()
	if g.refreshing || g.refs == 0 || time.Since(g.loadedAt) < m.every {
		m.mu.Unlock()
		return nil
	}
	g.refreshing = true
	room := m.budget - m.entries + g.size
	m.mu.Unlock()

	set, err := m.load(ctx, g.id, room)
	if errors.Is(err, errNoGallery) {
		set, err = map[memberKey]struct{}{}, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	g.refreshing = false
	if err != nil {
		return err
	}
	g.loadedAt = time.Now()
	if g.refs == 0 || m.galleries[g.id] != g {
		return nil // its last client left meanwhile: no longer counted
	}
	if m.entries-g.size+len(set) > m.budget {
		return errMembersBudget
	}
	m.entries += len(set) - g.size
	g.size = len(set)
	g.set.Store(&set)
	return nil
}

// Entries is the number of gallery items held for stream filters.
func (m *membership) Entries() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.entries
}

// load reads a gallery's items, at most max of them (errMembersBudget past
// that, without reading the rest).
func (m *membership) load(ctx context.Context, id string, max int) (map[memberKey]struct{}, error) {
	ctx, cancel := context.WithTimeout(ctx, memberLoadTimeout)
	defer cancel()
	batch := &pgx.Batch{}
	batch.Queue(`SELECT EXISTS (SELECT 1 FROM galleries WHERE id = $1::uuid)`, id)
	batch.Queue(`SELECT memory_id::text, memory_type::text FROM gallery_items WHERE gallery_id = $1::uuid LIMIT $2`, id, max+1)
	br := m.pool.SendBatch(ctx, batch)
	defer br.Close()
	var exists bool
	if err := br.QueryRow().Scan(&exists); err != nil {
		return nil, fmt.Errorf("gallery %s: %w", id, err)
	}
	if !exists {
		return nil, errNoGallery
	}
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("items of gallery %s: %w", id, err)
	}
	set := map[memberKey]struct{}{}
	var mid, typ string
	_, err = pgx.ForEachRow(rows, []any{&mid, &typ}, func() error {
		if k, ok := domain.ParseMemoryKey(mid, typ); ok {
			set[k] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("items of gallery %s: %w", id, err)
	}
	if len(set) > max {
		return nil, errMembersBudget
	}
	return set, nil
}
