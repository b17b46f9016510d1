package presencecache

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgesync/edgesync/domain"
)

// Defaults of Config.
const (
	DefaultMaxBytes    = 8 << 20
	DefaultTTL         = 2 * time.Second
	DefaultSettle      = time.Second
	DefaultFillTimeout = 10 * time.Second
)

// Cost estimates, in bytes, of what the byte bound counts besides the
// answers' own bytes. memberCost covers a member in its gallery's list (17
// bytes) and its entry in the memory → galleries index (a map entry of 49
// bytes at the map's usual fill); a test measures the heap against them.
const (
	entryCost  = 256
	pageCost   = 96
	memberCost = 112
)

// ErrInactive is returned by Gallery and Memory while the cache does not
// follow the stream: the caller reads Postgres itself.
var ErrInactive = errors.New("presence cache: not following the stream")

// Config tunes the cache.
type Config struct {
	// MaxBytes bounds what the cache holds: answers' bytes plus the
	// estimated cost of entries and of the cached galleries' membership
	// index (default DefaultMaxBytes). One entry may take at most a quarter
	// of it (at the default, a gallery of about 18,000 memories); a larger
	// gallery or answer is served but not kept.
	MaxBytes int64
	// TTL is how long an answer is served after it was read from Postgres
	// (default 2s). It bounds what the stream does not carry: gallery
	// membership changes, a deleted gallery, changes while the feed is cut
	// off from NATS.
	TTL time.Duration
	// Settle is how long after a memory of a cached gallery changed the
	// gallery's pages are re-read again, so the counts pick up the gallery
	// status tracker's recomputation (its debounce is 250 ms) instead of
	// keeping the figures it had before (default 1s).
	Settle time.Duration
	// FillTimeout bounds one read from Postgres (default 10s).
	FillTimeout time.Duration
}

// Member is one memory of a gallery, as gallery_items names it.
type Member struct {
	ID   [16]byte
	Type string
}

// Answer is an encoded answer, kept and served as it is.
type Answer struct {
	Body []byte
}

func (a Answer) size() int64 { return int64(len(a.Body)) }

// GalleryFill reads a gallery's first page of limit items from Postgres and
// encodes the answer. With members > 0 it also reads the gallery's members,
// at most members+1 of them: more than members means the gallery is too large
// to keep. A fill that returns an error caches nothing; the error goes to
// every request that waited for it.
type GalleryFill func(ctx context.Context, members int) (a Answer, ms []Member, err error)

// MemoryFill reads and encodes one memory's presence.
type MemoryFill func(ctx context.Context) (Answer, error)

type mkey = domain.MemoryKey

// memKey names a memory answer as the API and the stream spell it.
type memKey struct{ typ, id string }

// fkey names an in-flight fill: a gallery page (gallery, limit) or a memory.
type fkey struct {
	gallery string
	limit   int
	mem     memKey
}

type gallery struct {
	id        string
	members   []mkey
	readAt    time.Time // when members were read; the gallery expires TTL later
	version   uint64    // changes when members are replaced
	pages     map[int]*page
	changedAt time.Time // the last change of one of its memories
	bytes     int64
	elem      *list.Element
}

type page struct {
	ans     Answer
	expires time.Time
}

type memAnswer struct {
	key     memKey
	ans     Answer
	expires time.Time
	bytes   int64
	elem    *list.Element
}

type fill struct {
	key        fkey
	gen        uint64 // c.gen at the start: a reset since then makes it stale
	stale      bool   // an invalidation of its key raced it
	maxMembers int    // > 0: a gallery fill that reads members
	version    uint64 // a page-only fill: the members version it relies on
	changed    []mkey // memories invalidated while a members fill ran
	overflow   bool   // too many of them to remember: stale
	done       chan struct{}
	ans        Answer
	err        error
}

// maxChanged bounds what a members fill remembers of concurrent changes.
const maxChanged = 1024

// Cache is the presence cache. Build it with New; it is safe for concurrent
// use. It serves nothing until Following(true).
type Cache struct {
	cfg      Config
	maxEntry int64
	ahead    time.Duration // a hit this close to expiry refreshes in the background
	m        *metrics

	mu        sync.Mutex
	active    bool
	gen       uint64
	version   uint64
	bytes     int64
	lru       list.List // of *gallery and *memAnswer, most recent first
	galleries map[string]*gallery
	memories  map[memKey]*memAnswer
	// index maps a member to a cached gallery holding it; multi holds the
	// further galleries of the few memories in more than one.
	index     map[mkey]*gallery
	multi     map[mkey][]*gallery
	indexPeak int // len(index) at its largest since the map was made
	fills     map[fkey]*fill
}

// New builds a cache; it does no I/O. reg may be nil (unregistered metrics).
func New(cfg Config, reg prometheus.Registerer) *Cache {
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Settle <= 0 {
		cfg.Settle = DefaultSettle
	}
	if cfg.FillTimeout <= 0 {
		cfg.FillTimeout = DefaultFillTimeout
	}
	return &Cache{
		cfg:       cfg,
		maxEntry:  cfg.MaxBytes / 4,
		ahead:     cfg.TTL / 4,
		m:         newMetrics(reg),
		galleries: map[string]*gallery{},
		memories:  map[memKey]*memAnswer{},
		index:     map[mkey]*gallery{},
		multi:     map[mkey][]*gallery{},
		fills:     map[fkey]*fill{},
	}
}

// MaxBytes is the byte bound.
func (c *Cache) MaxBytes() int64 { return c.cfg.MaxBytes }

// TTL is how long an answer is served after it was read.
func (c *Cache) TTL() time.Duration { return c.cfg.TTL }

// Bytes is what the cache holds now, as counted against MaxBytes.
func (c *Cache) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// Active reports whether the cache serves (it follows the stream).
func (c *Cache) Active() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.active
}

// maxMembers is the most members a gallery may have to be kept.
func (c *Cache) maxMembers() int {
	return int(max((c.maxEntry-entryCost)/memberCost, 1))
}

// Gallery answers the first page of limit items of gallery id from memory,
// or through fill (shared with concurrent requests of the same page). It
// returns ErrInactive while the cache does not follow the stream.
func (c *Cache) Gallery(ctx context.Context, id string, limit int, fn GalleryFill) (Answer, error) {
	now := time.Now()
	key := fkey{gallery: id, limit: limit}
	c.mu.Lock()
	if !c.active {
		c.mu.Unlock()
		return Answer{}, ErrInactive
	}
	g := c.galleries[id]
	if g != nil && now.Before(g.readAt.Add(c.cfg.TTL)) {
		if p := g.pages[limit]; p != nil && now.Before(p.expires) {
			c.lru.MoveToFront(g.elem)
			if now.After(p.expires.Add(-c.ahead)) && c.fills[key] == nil {
				// Refresh ahead of expiry so a hot page never waits for it.
				f := c.startGalleryFill(key, g, now)
				go c.runGallery(context.Background(), f, fn)
			}
			a := p.ans
			c.mu.Unlock()
			c.m.galleryHit.Inc()
			return a, nil
		}
	}
	f := c.fills[key]
	if f == nil || f.stale || f.gen != c.gen {
		f = c.startGalleryFill(key, g, now)
		go c.runGallery(ctx, f, fn)
	}
	c.mu.Unlock()
	c.m.galleryMiss.Inc()
	return wait(ctx, f)
}

// startGalleryFill registers a fill; the lock is held. It reads members too
// unless the cached gallery's members stay valid well beyond this fill.
func (c *Cache) startGalleryFill(key fkey, g *gallery, now time.Time) *fill {
	f := &fill{key: key, gen: c.gen, done: make(chan struct{})}
	if g == nil || !now.Before(g.readAt.Add(c.cfg.TTL-c.ahead)) {
		f.maxMembers = c.maxMembers()
	} else {
		f.version = g.version
	}
	c.fills[key] = f
	return f
}

func wait(ctx context.Context, f *fill) (Answer, error) {
	select {
	case <-f.done:
		return f.ans, f.err
	case <-ctx.Done():
		return Answer{}, ctx.Err()
	}
}

// detach gives a fill its own deadline: it serves every request waiting for
// it, so the one that started it going away must not cancel it.
func (c *Cache) detach(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), c.cfg.FillTimeout)
}

func (c *Cache) runGallery(ctx context.Context, f *fill, fn GalleryFill) {
	ctx, cancel := c.detach(ctx)
	defer cancel()
	start := time.Now()
	var ms []Member
	f.ans, ms, f.err = safeGallery(ctx, fn, f.maxMembers)
	c.m.fills.Inc()
	// Packed outside the lock: a large gallery's members take a while.
	var keys []mkey
	if f.err == nil && f.maxMembers > 0 && len(ms) <= f.maxMembers {
		keys = make([]mkey, len(ms))
		for i, m := range ms {
			keys[i] = mkey{ID: m.ID, Type: domain.MemoryTypeIndex(m.Type)}
		}
	}
	c.mu.Lock()
	if c.fills[f.key] == f {
		delete(c.fills, f.key)
	}
	if f.err == nil {
		c.storeGallery(f, start, len(ms), keys)
	}
	c.mu.Unlock()
	close(f.done)
}

func safeGallery(ctx context.Context, fn GalleryFill, members int) (a Answer, ms []Member, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("presence cache: gallery fill panicked: %v", v)
		}
	}()
	return fn(ctx, members)
}

func safeMemory(ctx context.Context, fn MemoryFill) (a Answer, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("presence cache: memory fill panicked: %v", v)
		}
	}()
	return fn(ctx)
}

// storeGallery keeps a finished gallery fill read since start (n members
// read, packed in keys), unless something it read was invalidated meanwhile;
// the lock is held.
func (c *Cache) storeGallery(f *fill, start time.Time, n int, keys []mkey) {
	if !c.active || f.stale || f.gen != c.gen {
		c.m.discarded.Inc()
		return
	}
	limit := f.key.limit
	pg := &page{ans: f.ans, expires: start.Add(c.cfg.TTL)}
	g := c.galleries[f.key.gallery]
	if f.maxMembers > 0 {
		if n > f.maxMembers {
			c.m.tooLarge.Inc()
			return
		}
		if f.overflow || anyChanged(keys, f.changed) {
			c.m.discarded.Inc()
			return
		}
		if g != nil && sameMembers(g.members, keys) {
			// The same membership, read again: keep the index and the
			// other pages (each expires on its own).
			g.readAt = start
		} else {
			var changedAt time.Time
			if g != nil {
				changedAt = g.changedAt
				c.removeGallery(g)
			}
			c.version++
			g = &gallery{id: f.key.gallery, members: keys, readAt: start, version: c.version, pages: map[int]*page{}, changedAt: changedAt}
			for _, k := range keys {
				c.indexAdd(k, g)
			}
			g.bytes = entryCost + int64(len(keys))*memberCost
			if g.bytes+pageCost+pg.ans.size() > c.maxEntry {
				c.removeIndex(g)
				c.m.tooLarge.Inc()
				return
			}
			g.elem = c.lru.PushFront(g)
			c.galleries[g.id] = g
			c.bytes += g.bytes
		}
	} else if g == nil || g.version != f.version {
		c.m.discarded.Inc() // evicted or re-read meanwhile
		return
	}
	if settled := g.changedAt.Add(c.cfg.Settle); start.Before(settled) {
		pg.expires = minTime(pg.expires, settled)
	}
	pg.expires = minTime(pg.expires, g.readAt.Add(c.cfg.TTL))
	cost := pageCost + pg.ans.size()
	if old := g.pages[limit]; old != nil {
		g.bytes -= pageCost + old.ans.size()
		c.bytes -= pageCost + old.ans.size()
	}
	if g.bytes+cost > c.maxEntry {
		delete(g.pages, limit)
		c.m.tooLarge.Inc()
	} else {
		g.pages[limit] = pg
		g.bytes += cost
		c.bytes += cost
	}
	c.lru.MoveToFront(g.elem)
	c.evict()
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func sameMembers(a, b []mkey) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func anyChanged(members, changed []mkey) bool {
	if len(changed) == 0 {
		return false
	}
	set := make(map[mkey]struct{}, len(changed))
	for _, k := range changed {
		set[k] = struct{}{}
	}
	for _, k := range members {
		if _, ok := set[k]; ok {
			return true
		}
	}
	return false
}

// Memory answers a memory's presence from memory, or through fill (shared
// with concurrent requests of the same memory). It returns ErrInactive while
// the cache does not follow the stream.
func (c *Cache) Memory(ctx context.Context, typ, id string, fn MemoryFill) (Answer, error) {
	now := time.Now()
	k := memKey{typ: typ, id: id}
	key := fkey{mem: k}
	c.mu.Lock()
	if !c.active {
		c.mu.Unlock()
		return Answer{}, ErrInactive
	}
	if m := c.memories[k]; m != nil && now.Before(m.expires) {
		c.lru.MoveToFront(m.elem)
		if now.After(m.expires.Add(-c.ahead)) && c.fills[key] == nil {
			f := c.startMemoryFill(key)
			go c.runMemory(context.Background(), f, fn)
		}
		a := m.ans
		c.mu.Unlock()
		c.m.memoryHit.Inc()
		return a, nil
	}
	f := c.fills[key]
	if f == nil || f.stale || f.gen != c.gen {
		f = c.startMemoryFill(key)
		go c.runMemory(ctx, f, fn)
	}
	c.mu.Unlock()
	c.m.memoryMiss.Inc()
	return wait(ctx, f)
}

func (c *Cache) startMemoryFill(key fkey) *fill {
	f := &fill{key: key, gen: c.gen, done: make(chan struct{})}
	c.fills[key] = f
	return f
}

func (c *Cache) runMemory(ctx context.Context, f *fill, fn MemoryFill) {
	ctx, cancel := c.detach(ctx)
	defer cancel()
	start := time.Now()
	f.ans, f.err = safeMemory(ctx, fn)
	c.m.fills.Inc()
	c.mu.Lock()
	if c.fills[f.key] == f {
		delete(c.fills, f.key)
	}
	if f.err == nil {
		c.storeMemory(f, start)
	}
	c.mu.Unlock()
	close(f.done)
}

func (c *Cache) storeMemory(f *fill, start time.Time) {
	if !c.active || f.stale || f.gen != c.gen {
		c.m.discarded.Inc()
		return
	}
	cost := entryCost + f.ans.size()
	if cost > c.maxEntry {
		c.m.tooLarge.Inc()
		return
	}
	if old := c.memories[f.key.mem]; old != nil {
		c.removeMemory(old)
	}
	m := &memAnswer{key: f.key.mem, ans: f.ans, expires: start.Add(c.cfg.TTL), bytes: cost}
	m.elem = c.lru.PushFront(m)
	c.memories[m.key] = m
	c.bytes += cost
	c.evict()
}

// evict drops the least recently used entries until the bound holds; the
// lock is held.
func (c *Cache) evict() {
	for c.bytes > c.cfg.MaxBytes {
		e := c.lru.Back()
		if e == nil {
			break
		}
		switch v := e.Value.(type) {
		case *gallery:
			c.removeGallery(v)
		case *memAnswer:
			c.removeMemory(v)
		}
		c.m.evictions.Inc()
	}
	c.m.bytes.Set(float64(c.bytes))
}

func (c *Cache) removeGallery(g *gallery) {
	if c.galleries[g.id] != g {
		return
	}
	delete(c.galleries, g.id)
	c.lru.Remove(g.elem)
	c.removeIndex(g)
	c.bytes -= g.bytes
}

func (c *Cache) removeMemory(m *memAnswer) {
	if c.memories[m.key] != m {
		return
	}
	delete(c.memories, m.key)
	c.lru.Remove(m.elem)
	c.bytes -= m.bytes
}

func (c *Cache) indexAdd(k mkey, g *gallery) {
	if c.index[k] == nil {
		c.index[k] = g
		c.indexPeak = max(c.indexPeak, len(c.index))
		return
	}
	c.multi[k] = append(c.multi[k], g)
}

func (c *Cache) removeIndex(g *gallery) {
	for _, k := range g.members {
		more := c.multi[k]
		if c.index[k] == g {
			if len(more) == 0 {
				delete(c.index, k)
				continue
			}
			c.index[k] = more[len(more)-1]
			more = more[:len(more)-1]
		} else {
			for i, o := range more {
				if o == g {
					more = append(more[:i], more[i+1:]...)
					break
				}
			}
		}
		if len(more) == 0 {
			delete(c.multi, k)
		} else {
			c.multi[k] = more
		}
	}
	// Go maps keep their largest size: once the index is a quarter of it,
	// copy it into a map of its present size, so the heap follows the bound.
	if c.indexPeak > 4096 && len(c.index) < c.indexPeak/4 {
		idx := make(map[mkey]*gallery, len(c.index))
		for k, v := range c.index {
			idx[k] = v
		}
		c.index, c.indexPeak = idx, len(idx)
	}
}

// holding lists the cached galleries that hold a memory.
func (c *Cache) holding(k mkey) []*gallery {
	g := c.index[k]
	if g == nil {
		return nil
	}
	return append([]*gallery{g}, c.multi[k]...)
}

// dropPages forgets a gallery's pages but keeps its members; the lock is
// held.
func (c *Cache) dropPages(g *gallery, now time.Time) {
	for limit, p := range g.pages {
		cost := pageCost + p.ans.size()
		g.bytes -= cost
		c.bytes -= cost
		delete(g.pages, limit)
	}
	g.changedAt = now
}

// MemoryChanged invalidates what a change of this memory's edges (or row)
// makes stale: its answer and the pages of every cached gallery holding it.
func (c *Cache) MemoryChanged(id, memoryType string) {
	now := time.Now()
	mk := memKey{typ: memoryType, id: id}
	k, parsed := domain.ParseMemoryKey(id, memoryType)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m.invalidations.WithLabelValues("memory").Inc()
	if m := c.memories[mk]; m != nil {
		c.removeMemory(m)
	}
	if f := c.fills[fkey{mem: mk}]; f != nil {
		f.stale = true
	}
	if !parsed {
		return
	}
	var hit map[string]bool
	if gs := c.holding(k); len(gs) > 0 {
		hit = make(map[string]bool, len(gs))
		for _, g := range gs {
			c.dropPages(g, now)
			hit[g.id] = true
		}
	}
	for _, f := range c.fills {
		switch {
		case f.key.gallery == "":
		case f.maxMembers > 0:
			// Its members are not known yet: remember the memory and
			// check it against them when the fill is done.
			if len(f.changed) < maxChanged {
				f.changed = append(f.changed, k)
			} else {
				f.overflow = true
			}
		case hit[f.key.gallery]:
			f.stale = true
		}
	}
	c.m.bytes.Set(float64(c.bytes))
}

// GalleryChanged invalidates a gallery as a whole (its status changed, which
// may come from a membership change): its pages and its members.
func (c *Cache) GalleryChanged(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m.invalidations.WithLabelValues("gallery").Inc()
	if g := c.galleries[id]; g != nil {
		c.removeGallery(g)
	}
	for _, f := range c.fills {
		if f.key.gallery == id {
			f.stale = true
		}
	}
	c.m.bytes.Set(float64(c.bytes))
}

// Following tells the cache whether its feed follows the stream. Either way
// everything held so far is dropped (events may have been missed, or were
// never seen); with false the cache stops serving (ErrInactive) until the
// next Following(true).
func (c *Cache) Following(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m.invalidations.WithLabelValues("reset").Inc()
	c.active = on
	c.gen++
	c.galleries = map[string]*gallery{}
	c.memories = map[memKey]*memAnswer{}
	c.index, c.multi, c.indexPeak = map[mkey]*gallery{}, map[mkey][]*gallery{}, 0
	c.lru.Init()
	c.bytes = 0
	c.m.bytes.Set(0)
	if on {
		c.m.active.Set(1)
	} else {
		c.m.active.Set(0)
	}
}
