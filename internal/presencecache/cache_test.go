package presencecache

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// uuidOf makes a deterministic canonical UUID string and its bytes.
func uuidOf(s string) (string, [16]byte) {
	b := md5.Sum([]byte(s))
	x := fmt.Sprintf("%x", b[:])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32], b
}

func member(i int) (string, Member) {
	s, b := uuidOf(fmt.Sprint("m", i))
	return s, Member{ID: b, Type: "image"}
}

// source is a fake Postgres: a version per key, bumped by a change.
type source struct {
	mu      sync.Mutex
	version map[string]int
	reads   atomic.Int64
	gate    chan struct{} // when set, a fill waits on it after reading
	members []Member
}

func newSource(members int) *source {
	s := &source{version: map[string]int{}}
	for i := 0; i < members; i++ {
		_, m := member(i)
		s.members = append(s.members, m)
	}
	return s
}

func (s *source) change(key string) {
	s.mu.Lock()
	s.version[key]++
	s.mu.Unlock()
}

func (s *source) read(key string) []byte {
	s.reads.Add(1)
	s.mu.Lock()
	v := s.version[key]
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return []byte(fmt.Sprintf("%s@%d", key, v))
}

func (s *source) galleryFill(key string) GalleryFill {
	return func(ctx context.Context, members int) (Answer, []Member, error) {
		a := Answer{Body: s.read(key)}
		if members == 0 {
			return a, nil, nil
		}
		return a, s.members[:min(len(s.members), members+1)], nil
	}
}

func (s *source) memoryFill(key string) MemoryFill {
	return func(ctx context.Context) (Answer, error) { return Answer{Body: s.read(key)}, nil }
}

func newCache(t *testing.T, cfg Config) *Cache {
	t.Helper()
	c := New(cfg, nil)
	c.Following(true)
	return c
}

func get(t *testing.T, c *Cache, s *source, gallery string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := c.Gallery(ctx, gallery, 50, s.galleryFill(gallery))
	if err != nil {
		t.Fatalf("gallery %s: %v", gallery, err)
	}
	return string(a.Body)
}

func getMemory(t *testing.T, c *Cache, s *source, id string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := c.Memory(ctx, "image", id, s.memoryFill(id))
	if err != nil {
		t.Fatalf("memory %s: %v", id, err)
	}
	return string(a.Body)
}

func TestCache_HitAndMiss(t *testing.T) {
	c := newCache(t, Config{TTL: time.Minute})
	s := newSource(3)
	if got := get(t, c, s, "g1"); got != "g1@0" {
		t.Fatalf("first read %q", got)
	}
	if got := get(t, c, s, "g1"); got != "g1@0" || s.reads.Load() != 1 {
		t.Fatalf("second read %q after %d reads; want a hit", got, s.reads.Load())
	}
	id, _ := member(1)
	if got := getMemory(t, c, s, id); got != id+"@0" {
		t.Fatalf("memory %q", got)
	}
	getMemory(t, c, s, id)
	if s.reads.Load() != 2 {
		t.Fatalf("%d reads; want 2 (one per key)", s.reads.Load())
	}
	if c.Bytes() <= 0 || c.Bytes() > c.MaxBytes() {
		t.Fatalf("bytes %d", c.Bytes())
	}
}

func TestCache_Inactive(t *testing.T) {
	c := New(Config{}, nil)
	s := newSource(1)
	if _, err := c.Gallery(context.Background(), "g", 50, s.galleryFill("g")); !errors.Is(err, ErrInactive) {
		t.Fatalf("before Following(true): %v, want ErrInactive", err)
	}
	c.Following(true)
	get(t, c, s, "g")
	c.Following(false)
	if _, err := c.Memory(context.Background(), "image", "x", s.memoryFill("x")); !errors.Is(err, ErrInactive) {
		t.Fatalf("after Following(false): %v, want ErrInactive", err)
	}
	if c.Bytes() != 0 {
		t.Fatalf("Following(false) kept %d bytes", c.Bytes())
	}
}

func TestCache_TTL(t *testing.T) {
	c := newCache(t, Config{TTL: 50 * time.Millisecond})
	s := newSource(1)
	get(t, c, s, "g")
	s.change("g")
	deadline := time.Now().Add(5 * time.Second)
	for get(t, c, s, "g") != "g@1" {
		if time.Now().After(deadline) {
			t.Fatal("a change not in the stream never became visible: the TTL does not bound it")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCache_MemoryChanged: an edge event of a member drops the pages of the
// galleries holding it and the memory's own answer; other galleries stay.
func TestCache_MemoryChanged(t *testing.T) {
	c := newCache(t, Config{TTL: time.Minute, Settle: time.Millisecond})
	in := newSource(10)
	other := newSource(0)
	other.members = []Member{{ID: [16]byte{1}, Type: "note"}}
	get(t, c, in, "g1")
	get(t, c, other, "g2")
	id, _ := member(7)
	getMemory(t, c, in, id)

	in.change("g1")
	in.change(id)
	other.change("g2")
	c.MemoryChanged(id, "image")
	if got := get(t, c, in, "g1"); got != "g1@1" {
		t.Fatalf("gallery holding the changed memory answered %q, want g1@1", got)
	}
	if got := getMemory(t, c, in, id); got != id+"@1" {
		t.Fatalf("changed memory answered %q", got)
	}
	if got := get(t, c, other, "g2"); got != "g2@0" {
		t.Fatalf("a gallery not holding it answered %q, want the cached g2@0", got)
	}
	// Another type with the same id is another memory.
	in.change("g1")
	c.MemoryChanged(id, "video")
	if got := get(t, c, in, "g1"); got != "g1@1" {
		t.Fatalf("a video with the image's id invalidated the gallery: %q", got)
	}
}

func TestCache_GalleryChanged(t *testing.T) {
	c := newCache(t, Config{TTL: time.Minute})
	s := newSource(2)
	get(t, c, s, "g")
	s.change("g")
	c.GalleryChanged("g")
	if got := get(t, c, s, "g"); got != "g@1" {
		t.Fatalf("after a gallery status event: %q", got)
	}
}

// TestCache_Singleflight: concurrent misses of one key read once.
func TestCache_Singleflight(t *testing.T) {
	c := newCache(t, Config{TTL: time.Minute})
	s := newSource(1)
	s.gate = make(chan struct{})
	var wg sync.WaitGroup
	got := make([]string, 20)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := c.Gallery(context.Background(), "g", 50, s.galleryFill("g"))
			if err != nil {
				t.Error(err)
			}
			got[i] = string(a.Body)
		}()
	}
	eventuallyTrue(t, "the first fill started", func() bool { return s.reads.Load() == 1 })
	time.Sleep(20 * time.Millisecond) // let the other requests join (not an assertion on time)
	close(s.gate)
	wg.Wait()
	if n := s.reads.Load(); n != 1 {
		t.Fatalf("%d reads for 20 concurrent requests; want 1", n)
	}
	for _, g := range got {
		if g != "g@0" {
			t.Fatalf("answers %v", got)
		}
	}
}

func eventuallyTrue(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCache_InvalidationRacesFill: a fill that read before a change but
// finishes after its invalidation is served to the requests that were
// waiting, but not kept; the next request reads the change. Both for a
// gallery whose members are being read and for one whose are known.
func TestCache_InvalidationRacesFill(t *testing.T) {
	for _, tc := range []struct {
		name     string
		warm     bool // the gallery's members are cached: a page-only fill
		memEvent bool // a member's edge event (else a gallery status event)
	}{
		{"members fill, member changed", false, true},
		{"page fill, member changed", true, true},
		{"members fill, gallery status", false, false},
		{"page fill, gallery status", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(t, Config{TTL: time.Minute, Settle: time.Millisecond})
			s := newSource(5)
			id, _ := member(3)
			if tc.warm {
				get(t, c, s, "g")
				c.MemoryChanged(id, "image") // drops the page, keeps the members
			}
			gate := make(chan struct{})
			s.mu.Lock()
			s.gate = gate
			s.mu.Unlock()
			done := make(chan string)
			before := s.reads.Load()
			go func() {
				a, _ := c.Gallery(context.Background(), "g", 50, s.galleryFill("g"))
				done <- string(a.Body)
			}()
			eventuallyTrue(t, "the fill read", func() bool { return s.reads.Load() > before })
			// The fill has read version 0; now the change commits and its
			// event arrives before the fill is stored.
			s.change("g")
			if tc.memEvent {
				c.MemoryChanged(id, "image")
			} else {
				c.GalleryChanged("g")
			}
			s.mu.Lock()
			s.gate = nil
			s.mu.Unlock()
			close(gate)
			if got := <-done; got != "g@0" {
				t.Fatalf("the waiting request got %q", got)
			}
			if got := get(t, c, s, "g"); got != "g@1" {
				t.Fatalf("after the invalidation the cache answered %q: it kept a fill that raced it", got)
			}
		})
	}
}

// TestCache_StaleJoin: a request that arrives after an invalidation does not
// join a fill that started before it.
func TestCache_StaleJoin(t *testing.T) {
	c := newCache(t, Config{TTL: time.Minute})
	s := newSource(0)
	id, _ := member(1)
	gate := make(chan struct{})
	first := make(chan string)
	go func() {
		a, _ := c.Memory(context.Background(), "image", id, func(ctx context.Context) (Answer, error) {
			v := s.read(id)
			<-gate
			return Answer{Body: v}, nil
		})
		first <- string(a.Body)
	}()
	eventuallyTrue(t, "the first fill read", func() bool { return s.reads.Load() == 1 })
	s.change(id)
	c.MemoryChanged(id, "image")
	if got := getMemory(t, c, s, id); got != id+"@1" {
		t.Fatalf("a request after the invalidation got %q", got)
	}
	close(gate)
	if got := <-first; got != id+"@0" {
		t.Fatalf("first request got %q", got)
	}
	if got := getMemory(t, c, s, id); got != id+"@1" {
		t.Fatalf("the late stale fill replaced the fresh answer: %q", got)
	}
}

// TestCache_Bound: many galleries and memories keep the cache under its
// bound, evicting the least recently used; the heap it takes is of the order
// the bound counts.
func TestCache_Bound(t *testing.T) {
	const bound = 1 << 20
	c := newCache(t, Config{MaxBytes: bound, TTL: time.Minute})
	s := newSource(100)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heapBefore := ms.HeapAlloc
	for i := 0; i < 2000; i++ {
		// Each gallery has its own members, so the index grows with them.
		gs := &source{version: map[string]int{}}
		for j := 0; j < 100; j++ {
			_, m := member(i*100 + j)
			gs.members = append(gs.members, m)
		}
		get(t, c, gs, fmt.Sprint("g", i))
		id, _ := member(i)
		getMemory(t, c, s, id)
		if b := c.Bytes(); b > bound {
			t.Fatalf("after %d galleries the cache holds %d bytes > bound %d", i+1, b, bound)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	grown := int64(ms.HeapAlloc) - int64(heapBefore)
	c.mu.Lock()
	n := len(c.galleries)
	c.mu.Unlock()
	if n == 0 || n >= 2000 {
		t.Fatalf("%d galleries cached; want some, not all", n)
	}
	// The most recent gallery is still there, the first is gone.
	s0 := &source{version: map[string]int{}}
	before := s0.reads.Load()
	get(t, c, s0, "g0")
	if s0.reads.Load() == before {
		t.Fatal("g0 was not evicted")
	}
	if grown > 2*bound {
		t.Fatalf("the heap grew by %d bytes for a cache bounded at %d: the cost estimates are too low", grown, bound)
	}
	t.Logf("%d galleries of 100 members cached in %d counted bytes; heap grew by %d", n, c.Bytes(), grown)
}

// TestCache_TooLarge: a gallery with more members than a quarter of the bound
// allows is answered but not kept.
func TestCache_TooLarge(t *testing.T) {
	c := newCache(t, Config{MaxBytes: 64 << 10, TTL: time.Minute})
	s := newSource(200) // 200 × memberCost > 16 KiB
	get(t, c, s, "big")
	get(t, c, s, "big")
	if n := s.reads.Load(); n != 2 {
		t.Fatalf("%d reads; a too large gallery must not be kept", n)
	}
	if c.Bytes() != 0 {
		t.Fatalf("holds %d bytes", c.Bytes())
	}
}

// TestCache_Settle: pages re-read soon after a member changed expire after
// Settle, so the tracker's recomputed counts replace the old ones.
func TestCache_Settle(t *testing.T) {
	c := newCache(t, Config{TTL: time.Minute, Settle: 30 * time.Millisecond})
	s := newSource(3)
	id, _ := member(1)
	get(t, c, s, "g")
	c.MemoryChanged(id, "image")
	get(t, c, s, "g") // re-read right after the change
	s.change("g")     // the tracker stores its figures later, without an event
	deadline := time.Now().Add(5 * time.Second)
	for get(t, c, s, "g") != "g@1" {
		if time.Now().After(deadline) {
			t.Fatal("the page read right after a change was kept past Settle")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCache_FillErrorAndPanic(t *testing.T) {
	c := newCache(t, Config{TTL: time.Minute})
	boom := errors.New("not found")
	_, err := c.Gallery(context.Background(), "g", 50, func(ctx context.Context, members int) (Answer, []Member, error) { return Answer{}, nil, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("error %v", err)
	}
	_, err = c.Memory(context.Background(), "image", "x", func(ctx context.Context) (Answer, error) { panic("kaput") })
	if err == nil {
		t.Fatal("a panicking fill answered no error")
	}
	if c.Bytes() != 0 {
		t.Fatal("an error was cached")
	}
}
