package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/edgesync/edgesync/internal/presencecache"
)

// Presence answers from memory (internal/presencecache): the first page of a
// gallery (no cursor, not fresh) and a memory's presence. The cache keeps the
// encoded answer, so a hit writes stored bytes; the answer says
// "source":"memory" and, in as_of, when it was read from Postgres. Without a
// cache, or while the cache does not follow the stream, both read Postgres.

// cachedGallery answers a gallery's first page through the cache; false
// means the caller reads Postgres itself.
func (s *Server) cachedGallery(w http.ResponseWriter, r *http.Request, id string, limit int) bool {
	c := s.deps.Presence
	if c == nil {
		return false
	}
	a, err := c.Gallery(r.Context(), id, limit, func(ctx context.Context, members int) (presencecache.Answer, []presencecache.Member, error) {
		readAt := time.Now().UTC()
		page, ms, err := s.readGallery(ctx, id, limit, nil, false, members)
		if err != nil {
			return presencecache.Answer{}, nil, err
		}
		page.Gallery.Source, page.Gallery.AsOf = sourceMemory, &readAt
		a, err := encodeAnswer(page)
		return a, ms, err
	})
	return s.answerCached(w, r, a, err)
}

// cachedMemory answers a memory's presence through the cache; false means
// the caller reads Postgres itself.
func (s *Server) cachedMemory(w http.ResponseWriter, r *http.Request, typ, id string) bool {
	c := s.deps.Presence
	if c == nil {
		return false
	}
	a, err := c.Memory(r.Context(), typ, id, func(ctx context.Context) (presencecache.Answer, error) {
		readAt := time.Now().UTC()
		m, err := s.readMemory(ctx, typ, id)
		if err != nil {
			return presencecache.Answer{}, err
		}
		m.Source, m.AsOf = sourceMemory, &readAt
		return encodeAnswer(m)
	})
	return s.answerCached(w, r, a, err)
}

const sourceMemory = "memory"

func (s *Server) answerCached(w http.ResponseWriter, r *http.Request, a presencecache.Answer, err error) bool {
	if errors.Is(err, presencecache.ErrInactive) {
		return false
	}
	if err != nil {
		s.fail(w, r, err)
		return true
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(a.Body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(a.Body) // the client went away: nothing left to tell it
	return true
}

// encodeAnswer encodes v as writeJSON does (with its final newline).
func encodeAnswer(v any) (presencecache.Answer, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return presencecache.Answer{}, err
	}
	return presencecache.Answer{Body: append(b, '\n')}, nil
}
