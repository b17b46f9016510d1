package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// BackendStatus is one backend's answer in GET /api/health/backends. Error is
// a person-readable reason, never the driver's message (which names hosts,
// users and databases).
type BackendStatus struct {
	Name      string  `json:"name"`
	OK        bool    `json:"ok"`
	Error     string  `json:"error,omitempty"`
	LatencyMS float64 `json:"latency_ms"`
}

// DefaultCheckTimeout bounds one backend check, so one hung backend cannot
// delay the others' results.
const DefaultCheckTimeout = 3 * time.Second

// Health runs the backend checks when asked (the daemon does every 15 s)
// and keeps the last result, which GET /api/health/backends answers from: a
// public request never starts an outbound check, so it cannot be used to
// amplify load on the backends.
type Health struct {
	checks  []BackendCheck
	timeout time.Duration
	log     *zap.Logger

	mu      sync.Mutex
	last    []BackendStatus
	at      time.Time
	lastRaw map[string]string // last raw error per backend, logged on change
}

// NewHealth builds a Health over checks; timeout <= 0 means
// DefaultCheckTimeout. It runs nothing until Check.
func NewHealth(checks []BackendCheck, timeout time.Duration, log *zap.Logger) *Health {
	if timeout <= 0 {
		timeout = DefaultCheckTimeout
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Health{checks: checks, timeout: timeout, log: log.With(zap.String("component", "health")), lastRaw: map[string]string{}}
}

// Check runs every check now, concurrently, keeps the results for Last and
// returns them. A failing check's own error is logged (once per change), not
// kept.
func (h *Health) Check(ctx context.Context) []BackendStatus {
	out := make([]BackendStatus, len(h.checks))
	raw := make([]error, len(h.checks))
	var wg sync.WaitGroup
	for i, c := range h.checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], raw[i] = h.check(ctx, c)
		}()
	}
	wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, err := range raw {
		name := h.checks[i].Name
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if msg != h.lastRaw[name] {
			if err != nil {
				h.log.Warn("backend check failed", zap.String("backend", name), zap.String("reason", out[i].Error), zap.Error(err))
			} else {
				h.log.Info("backend check ok again", zap.String("backend", name))
			}
			h.lastRaw[name] = msg
		}
	}
	h.last, h.at = out, time.Now()
	return append([]BackendStatus(nil), out...)
}

// Last returns the results of the last Check and when it ran (zero: never).
func (h *Health) Last() ([]BackendStatus, time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]BackendStatus(nil), h.last...), h.at
}

func (h *Health) check(ctx context.Context, b BackendCheck) (st BackendStatus, err error) {
	st.Name = b.Name
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	start := time.Now()
	defer func() {
		// A panicking check is a down backend, not a crashed daemon.
		if v := recover(); v != nil {
			err = fmt.Errorf("check panicked: %v", v)
			st.OK, st.Error = false, "the check itself failed (the daemon's log has the details)"
		}
		st.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
	}()
	if err = b.Check(ctx); err != nil {
		st.Error = h.reason(ctx, err)
		return st, err
	}
	st.OK = true
	return st, nil
}

// reasonError is an error whose message is already fit for the public.
type reasonError struct{ msg string }

func (e *reasonError) Error() string { return e.msg }

// Unhealthy returns an error for a BackendCheck whose text is shown as the
// backend's reason as it is; it must name no host, user, database or URL.
func Unhealthy(format string, args ...any) error {
	return &reasonError{msg: fmt.Sprintf(format, args...)}
}

// reason turns a check's error into words for the public: the kind of
// failure, without the connection details the driver's message carries.
func (h *Health) reason(ctx context.Context, err error) string {
	var re *reasonError
	var pe *pgconn.PgError
	var dns *net.DNSError
	var ne net.Error
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var certErr *tls.CertificateVerificationError
	var recErr tls.RecordHeaderError
	switch {
	case errors.As(err, &re):
		return re.msg
	case errors.As(err, &pe):
		switch pe.Code {
		case "28000", "28P01":
			return "authentication failed: check the user and password of the setting"
		case "3D000":
			return "the database does not exist"
		case "53300":
			return "too many connections"
		case "57P01", "57P02", "57P03":
			return "the server is starting up or shutting down"
		}
		return "the server refused the connection (SQLSTATE " + pe.Code + ")"
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil || (errors.As(err, &ne) && ne.Timeout()):
		return fmt.Sprintf("no answer within %s", h.timeout)
	case errors.As(err, &dns):
		return "the host name does not resolve"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "the host is unreachable"
	case errors.As(err, &unknownCA), errors.As(err, &badHost), errors.As(err, &certErr):
		return "the TLS certificate was not accepted"
	case errors.As(err, &recErr):
		return "the TLS handshake failed"
	}
	return "unreachable (the daemon's log has the details)"
}
