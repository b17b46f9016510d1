package api

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/edgesync/edgesync/domain"
)

var sseWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 8<<10) }}

// sseRetryAfter is the Retry-After (seconds) of a stream refused at the cap.
const sseRetryAfter = "5"

// syncStream serves GET /api/storage/sync-status/stream. It is exempt from the
// handler deadline and lifts the server's connection deadlines, setting one
// per write instead, so a healthy stream lives as long as the client wants
// and a stuck one is cut after SSEWriteTimeout.
func (s *Server) syncStream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	backend, state := q.Get("backend"), q.Get("state")
	if backend != "" && !oneOf(backend, backends) {
		writeError(w, enumError("backend", backend, backends))
		return
	}
	if state != "" && !oneOf(state, syncStates) {
		writeError(w, enumError("state", state, syncStates))
		return
	}
	filter := streamFilter{backend: backend, state: state, memory: q.Get("memory")}
	if filter.memory != "" && !domain.CanonicalUUID(filter.memory) {
		writeError(w, uuidError("memory", filter.memory))
		return
	}
	if gallery := q.Get("gallery"); gallery != "" {
		if !domain.CanonicalUUID(gallery) {
			writeError(w, uuidError("gallery", gallery))
			return
		}
		g, err := s.members.acquire(r.Context(), gallery)
		switch {
		case errors.Is(err, errNoGallery):
			writeError(w, notFound("gallery "+gallery+" does not exist"))
			return
		case errors.Is(err, errMembersBudget):
			w.Header().Set("Retry-After", sseRetryAfter)
			writeError(w, &apiError{Status: http.StatusServiceUnavailable, Code: "too_many_clients",
				Message: "this instance holds its maximum of " + itoa(int64(s.cfg.SSEGalleryMembers)) +
					" gallery items for gallery streams; retry later (another instance may have room)"})
			return
		case err != nil:
			s.fail(w, r, fmt.Errorf("load the items of gallery %s: %w", gallery, err))
			return
		}
		defer s.members.release(g)
		filter.gallery = g
	}
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = q.Get("last_event_id") // for clients that cannot set headers
	}
	sub, backlog, reset, err := s.hub.subscribe(lastID, filter)
	switch {
	case errors.Is(err, errHubFull):
		// Another instance behind the Service may have room; EventSource
		// does not retry a 503 by itself, so the client's code must.
		w.Header().Set("Retry-After", sseRetryAfter)
		writeError(w, &apiError{Status: http.StatusServiceUnavailable, Code: "too_many_clients",
			Message: "this instance serves its maximum of " + itoa(int64(s.cfg.MaxSSEClients)) + " stream clients (EDGESYNC_SSE_MAX_CLIENTS); retry later"})
		return
	case err != nil:
		writeError(w, unavailable(err.Error()))
		return
	}
	defer s.hub.unsubscribe(sub)

	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // proxies must not buffer a stream
	w.WriteHeader(http.StatusOK)

	// An idle client holds no write buffer: one comes from a pool for each
	// batch of writes and goes back with the flush.
	var bw *bufio.Writer
	buf := func() *bufio.Writer {
		if bw == nil {
			bw = sseWriters.Get().(*bufio.Writer)
			bw.Reset(w)
		}
		return bw
	}
	flush := func() bool {
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.SSEWriteTimeout))
		err := buf().Flush()
		bw.Reset(nil)
		sseWriters.Put(bw)
		bw = nil
		return err == nil && rc.Flush() == nil
	}
	buf().WriteString("retry: 2000\n: connected\n\n")
	if reset {
		buf().WriteString("event: reset\ndata: {\"reason\":\"last_event_id_unknown\"}\n\n")
	}
	for _, ev := range backlog {
		writeEvent(buf(), ev)
	}
	if !flush() {
		return
	}
	keepAlive := time.NewTicker(s.cfg.SSEKeepAlive)
	defer keepAlive.Stop()
	var refresh <-chan time.Time
	if filter.gallery != nil {
		// Each client's ticker offers a reload; the shared set is reloaded
		// at most once per interval whatever the number of its clients.
		t := time.NewTicker(s.cfg.SSEGalleryRefresh)
		defer t.Stop()
		refresh = t.C
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-refresh:
			if err := s.members.refresh(r.Context(), filter.gallery); err != nil && r.Context().Err() == nil {
				s.log.Debug("reload a gallery's items for its stream; keeping the old ones", requestField(r), errField(err))
			}
		case <-keepAlive.C:
			buf().WriteString(": keep-alive\n\n")
			if !flush() {
				return
			}
		case ev, ok := <-sub.ch:
			if !ok {
				if sub.reason != "" {
					buf().WriteString(": " + sub.reason + "\n\n")
					flush()
				}
				return
			}
			writeEvent(buf(), ev)
			// Batch what is already queued into one flush.
			for more := true; more; {
				select {
				case ev, ok := <-sub.ch:
					if !ok {
						more = false
						break
					}
					writeEvent(buf(), ev)
				default:
					more = false
				}
			}
			if !flush() {
				return
			}
		}
	}
}

func writeEvent(bw *bufio.Writer, ev *event) {
	if ev.name != "" {
		bw.WriteString("event: " + ev.name + "\n")
	}
	if ev.id != "" {
		bw.WriteString("id: " + ev.id + "\n")
	}
	// A data field cannot hold a newline: each line gets its own field.
	for _, line := range bytes.Split(bytes.TrimRight(ev.data, "\r\n"), []byte("\n")) {
		bw.WriteString("data: ")
		bw.Write(bytes.TrimSuffix(line, []byte("\r")))
		bw.WriteByte('\n')
	}
	bw.WriteByte('\n')
}
