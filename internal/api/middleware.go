package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
)

type ctxKey int

const requestIDKey ctxKey = 0

// requestID returns the request's id (set by withRequestID).
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

func requestField(r *http.Request) zap.Field { return zap.String("request_id", requestID(r.Context())) }

func errField(err error) zap.Field { return zap.Error(err) }

// validRequestID accepts a caller's id only when it is short and harmless in
// logs and headers; anything else is replaced by a fresh one.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.ContainsRune("-_.:/", c):
		default:
			return false
		}
	}
	return true
}

func (s *Server) withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !validRequestID(id) {
			id = uuid.NewString()
		}
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey, id)))
	})
}

// recorder remembers the status and size of an answer for the access log and
// whether anything was written (a panic after that cannot become a 500).
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (rec *recorder) WriteHeader(code int) {
	if rec.status == 0 {
		rec.status = code
	}
	rec.ResponseWriter.WriteHeader(code)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	n, err := rec.ResponseWriter.Write(b)
	rec.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (flush, deadlines).
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

func (s *Server) withAccessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		d := time.Since(start)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		s.metrics.observe(route, rec.status, d)
		// Writes and failures at info, 5xx at warn; successful reads at
		// debug: probes every few seconds and presence reads at thousands a
		// second would drown the log (and cost more than the answer); their
		// rate and latency are in edgesync_http_requests_total and _duration.
		level := zap.InfoLevel
		switch {
		case rec.status >= 500:
			level = zap.WarnLevel
		case rec.status < 400 && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			level = zap.DebugLevel
		}
		if ce := s.log.Check(level, "http request"); ce != nil {
			ce.Write(
				zap.String("request_id", requestID(r.Context())),
				zap.String("method", r.Method),
				zap.String("path", r.URL.Path),
				zap.String("route", route),
				zap.Int("status", rec.status),
				zap.Int64("bytes", rec.bytes),
				zap.Duration("duration", d),
				zap.String("remote", r.RemoteAddr),
			)
		}
	})
}

// withRecover turns a handler panic into a 500 with the error shape, so one
// bad request never takes the process down.
func (s *Server) withRecover(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v) // net/http's own way to abort a response silently
			}
			s.metrics.panics.Inc()
			s.log.Error("handler panic", requestField(r), zap.String("panic", fmt.Sprint(v)), zap.ByteString("stack", debug.Stack()))
			if rec, ok := w.(*recorder); ok && rec.status != 0 {
				return // the answer has begun; the client sees a cut response
			}
			writeError(w, internalError())
		}()
		next.ServeHTTP(w, r)
	})
}

func (s *Server) withDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.HandlerTimeout)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func (s *Server) withBodyLimit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > s.cfg.MaxBodyBytes {
			writeError(w, tooLarge(s.cfg.MaxBodyBytes))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		next.ServeHTTP(w, r)
	})
}

// withToken guards writes with the admin bearer token. Both sides are hashed
// first so the constant-time comparison does not leak the token's length.
func (s *Server) withToken(next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(s.cfg.AdminToken))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.AdminToken == "" {
			s.noTokenOnce.Do(func() {
				s.log.Warn("write and admin endpoints answer 403: EDGESYNC_ADMIN_TOKEN is not set; set it to enable them")
			})
			writeError(w, &apiError{Status: http.StatusForbidden, Code: "forbidden", Message: "write and admin endpoints are disabled on this server: EDGESYNC_ADMIN_TOKEN is not set"})
			return
		}
		h := r.Header.Get("Authorization")
		const scheme = "bearer "
		if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
			unauthorized(w, "missing bearer token: send Authorization: Bearer $EDGESYNC_ADMIN_TOKEN")
			return
		}
		got := sha256.Sum256([]byte(strings.TrimSpace(h[len(scheme):])))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			unauthorized(w, "invalid bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="edgesync"`)
	writeError(w, &apiError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: msg})
}

func statusLabel(code int) string { return strconv.Itoa(code) }
