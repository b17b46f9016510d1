package api

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"

	"github.com/edgesync/edgesync/domain"
)

var (
	errHubClosed = errors.New("the server is shutting down")
	errHubFull   = errors.New("too many stream clients")
)

// Hub fans sync-status events out to the SSE clients of
// GET /api/storage/sync-status/stream. Publish never blocks: every client has
// a bounded buffer and a client whose buffer is full is dropped (it gets a
// final comment and can reconnect with Last-Event-ID). A ring of recent events
// serves those resumes.
//
// Publish runs on the caller's goroutine and costs one pass over the clients,
// so the daemon calls it from the stream feed (internal/ssefeed), never from
// the CDC pipeline. The number of clients is capped: beyond the cap,
// subscribe refuses and the handler answers 503.
type Hub struct {
	buf        int
	maxClients int
	metrics    *metrics

	mu      sync.Mutex
	closed  bool
	seq     uint64
	ring    []*event // circular; ring[(head+i)%len] for i < n
	head, n int
	byID    map[string]uint64 // event id → seq, for events still in the ring
	clients map[*subscriber]struct{}
}

type event struct {
	seq  uint64
	name string
	id   string
	data []byte
	// The filter keys, read from data the first time a filtering client
	// asks (under the hub's lock): most events reach no filtering client,
	// and parsing every envelope would cost the feed more than the fan-out.
	parsed bool
	keys   eventKeys
}

// eventKeys are what the stream's filters look at; "" where the event does
// not say.
type eventKeys struct {
	backend  string
	state    string
	memoryID string
	member   memberKey // memoryID and memory_type, for gallery filters
	isMember bool      // member is set
}

// filterKeys returns the event's filter keys; the hub's lock is held.
func (ev *event) filterKeys() *eventKeys {
	if !ev.parsed {
		ev.keys = filterKeys(ev.data)
		ev.parsed = true
	}
	return &ev.keys
}

// streamFilter is what one stream client asked for; zero fields do not
// filter.
type streamFilter struct {
	backend string
	state   string
	memory  string          // a memory id
	gallery *galleryMembers // the items of a gallery
}

type subscriber struct {
	ch     chan *event
	filter streamFilter
	reason string // why ch was closed; written before the close
}

func newHub(replay, buf, maxClients int, m *metrics) *Hub {
	return &Hub{buf: buf, maxClients: maxClients, metrics: m, ring: make([]*event, replay), byID: make(map[string]uint64, replay), clients: map[*subscriber]struct{}{}}
}

// Publish sends a storage_edges change to the stream clients as a "sync"
// event. id is the event's Nats-Msg-Id (the SSE id clients resume from); data
// is its JSON envelope, whose backend and after/before sync_state drive the
// clients' filters. The hub keeps data: the caller must not modify it later.
func (h *Hub) Publish(id string, data []byte) { h.PublishEvent("sync", id, data) }

// PublishEvent sends an event of the given name (e.g. "progress" from the ICP
// mirror). id may be empty (the event cannot then be resumed from).
func (h *Hub) PublishEvent(name, id string, data []byte) {
	h.publish(&event{name: sseSafe(name), id: sseSafe(id), data: data})
}

// Backfill adds an event that happened before this instance started to the
// resume ring without sending it to anyone: a client that was connected to
// another instance can then resume here with Last-Event-ID.
func (h *Hub) Backfill(name, id string, data []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.admitLocked(&event{name: sseSafe(name), id: sseSafe(id), data: data})
}

// admitLocked numbers a new event and keeps it in the resume ring; false for
// a duplicate or a closed hub.
func (h *Hub) admitLocked(ev *event) bool {
	if h.closed || h.known(ev.id) {
		return false
	}
	h.seq++
	ev.seq = h.seq
	h.remember(ev)
	return true
}

// Has reports whether the event with this id is in the resume ring (a
// client resuming from it gets exactly what followed).
func (h *Hub) Has(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.known(sseSafe(id))
}

// known reports whether an event with this id is still in the ring: the same
// id again is a duplicate (a redelivery) that clients already got.
func (h *Hub) known(id string) bool {
	if id == "" {
		return false
	}
	_, ok := h.byID[id]
	return ok
}

func (h *Hub) publish(ev *event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.admitLocked(ev) {
		return
	}
	for c := range h.clients {
		if !c.wants(ev) {
			continue
		}
		select {
		case c.ch <- ev:
		default:
			h.dropLocked(c, "dropped: this client fell too far behind; reconnect with Last-Event-ID")
			h.metrics.sseDropped.Inc()
		}
	}
}

func (h *Hub) remember(ev *event) {
	if len(h.ring) == 0 {
		return
	}
	if h.n == len(h.ring) {
		old := h.ring[h.head]
		if h.byID[old.id] == old.seq {
			delete(h.byID, old.id)
		}
		h.ring[h.head] = ev
		h.head = (h.head + 1) % len(h.ring)
	} else {
		h.ring[(h.head+h.n)%len(h.ring)] = ev
		h.n++
	}
	if ev.id != "" {
		h.byID[ev.id] = ev.seq
	}
}

// subscribe registers a client. With lastID it also returns the events after
// that id still in the ring (registration and backlog are taken under one
// lock, so nothing falls between them); reset reports that lastID is no longer
// (or never was) in the ring and the client starts live. It fails with
// errHubClosed after Close and errHubFull at the client cap.
func (h *Hub) subscribe(lastID string, f streamFilter) (sub *subscriber, backlog []*event, reset bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, nil, false, errHubClosed
	}
	if h.maxClients > 0 && len(h.clients) >= h.maxClients {
		h.metrics.sseRejected.Inc()
		return nil, nil, false, errHubFull
	}
	sub = &subscriber{ch: make(chan *event, h.buf), filter: f}
	if lastID != "" {
		seq, ok := h.byID[lastID]
		if !ok {
			reset = true
		} else {
			for i := 0; i < h.n; i++ {
				ev := h.ring[(h.head+i)%len(h.ring)]
				if ev.seq > seq && sub.wants(ev) {
					backlog = append(backlog, ev)
				}
			}
		}
	}
	h.clients[sub] = struct{}{}
	h.metrics.sseClients.Inc()
	return sub, backlog, reset, nil
}

func (h *Hub) unsubscribe(sub *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropLocked(sub, "")
}

func (h *Hub) dropLocked(sub *subscriber, reason string) {
	if _, ok := h.clients[sub]; !ok {
		return
	}
	delete(h.clients, sub)
	sub.reason = reason
	close(sub.ch)
	h.metrics.sseClients.Dec()
}

// Close ends every stream (their handlers return) and refuses new ones.
// http.Server.Shutdown does not cancel running handlers, so HTTPServer
// registers Close to run on Shutdown.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for c := range h.clients {
		h.dropLocked(c, "server shutting down; reconnect with Last-Event-ID")
	}
}

// Clients is the number of connected stream clients.
func (h *Hub) Clients() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// wants is called with the hub's lock held. A memory or gallery filter
// passes only events that name a memory (edge changes and progress) of that
// memory or gallery; backend and state filters pass events that do not say.
func (c *subscriber) wants(ev *event) bool {
	f := &c.filter
	if *f == (streamFilter{}) {
		return true
	}
	k := ev.filterKeys()
	if f.memory != "" && k.memoryID != f.memory {
		return false
	}
	if f.gallery != nil && (!k.isMember || !f.gallery.has(k.member)) {
		return false
	}
	return (f.backend == "" || k.backend == "" || f.backend == k.backend) &&
		(f.state == "" || k.state == "" || f.state == k.state)
}

// filterKeys reads the backend, sync state and memory of an edge envelope
// (after image, or before for a delete), or of a flat progress event.
func filterKeys(data []byte) eventKeys {
	type image struct {
		Backend   string `json:"backend"`
		SyncState string `json:"sync_state"`
	}
	var env struct {
		Backend    string `json:"backend"`
		SyncState  string `json:"sync_state"`
		MemoryID   string `json:"memory_id"`
		MemoryType string `json:"memory_type"`
		After      *image `json:"after"`
		Before     *image `json:"before"`
	}
	if json.Unmarshal(data, &env) != nil {
		return eventKeys{}
	}
	k := eventKeys{backend: env.Backend, state: env.SyncState, memoryID: env.MemoryID}
	k.member, k.isMember = domain.ParseMemoryKey(env.MemoryID, env.MemoryType)
	img := env.After
	if img == nil {
		img = env.Before
	}
	if img != nil {
		if k.backend == "" {
			k.backend = img.Backend
		}
		if k.state == "" {
			k.state = img.SyncState
		}
	}
	return k
}

// sseSafe removes what would break an SSE field line.
func sseSafe(s string) string {
	if !strings.ContainsAny(s, "\r\n\x00") {
		return s
	}
	return strings.NewReplacer("\r", "", "\n", "", "\x00", "").Replace(s)
}
