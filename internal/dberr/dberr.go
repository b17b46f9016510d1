// Package dberr turns Postgres errors a person can cause (bad URL, server down,
// wrong password, missing privilege, wal_level) into one line that says what is
// wrong and what to do. Callers print the line; no stack traces.
//
// It imports pgx only; nothing else of the project.
package dberr

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Explain returns a one-line description of err for a person.
func Explain(err error) string {
	if err == nil {
		return ""
	}
	var pce *pgconn.ParseConfigError
	if errors.As(err, &pce) {
		return fmt.Sprintf("EDGESYNC_DATABASE_URL is not a valid Postgres URL (%v); use postgres://user:PASSWORD@host:5432/db", pce.Unwrap())
	}
	var pge *pgconn.PgError
	if errors.As(err, &pge) {
		return explainPg(pge)
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		inner := ce.Unwrap()
		if errors.As(inner, &pge) {
			return explainPg(pge)
		}
		var ne net.Error
		var oe *net.OpError
		switch {
		case errors.As(inner, &oe) && strings.Contains(oe.Error(), "refused"):
			return fmt.Sprintf("cannot connect to Postgres at %s: connection refused; check EDGESYNC_DATABASE_URL and that the server is running", where(ce))
		case errors.As(inner, &ne) && ne.Timeout(), errors.Is(inner, context.DeadlineExceeded):
			return fmt.Sprintf("cannot connect to Postgres at %s: timed out; check EDGESYNC_DATABASE_URL, the network and firewalls", where(ce))
		}
		var dnsErr *net.DNSError
		if errors.As(inner, &dnsErr) {
			return fmt.Sprintf("cannot connect to Postgres: host %q not found; check the host in EDGESYNC_DATABASE_URL", dnsErr.Name)
		}
		return fmt.Sprintf("cannot connect to Postgres at %s: %v; check EDGESYNC_DATABASE_URL and that the server is running", where(ce), oneLine(inner))
	}
	return oneLine(err)
}

func where(ce *pgconn.ConnectError) string {
	if ce.Config == nil {
		return "the configured address"
	}
	return fmt.Sprintf("%s:%d", ce.Config.Host, ce.Config.Port)
}

func explainPg(e *pgconn.PgError) string {
	switch e.Code {
	case "28P01", "28000":
		return fmt.Sprintf("Postgres refused the login: %s; check the user and password in EDGESYNC_DATABASE_URL", e.Message)
	case "3D000":
		return fmt.Sprintf("%s; create it or fix the database name in EDGESYNC_DATABASE_URL", e.Message)
	case "42501":
		return fmt.Sprintf("permission denied: %s; the edgesync role needs REPLICATION and ownership of the edgesync objects (ALTER ROLE <role> REPLICATION; GRANT CREATE ON SCHEMA public TO <role>)", e.Message)
	case "53300":
		return fmt.Sprintf("Postgres has no free connection slots (%s); raise max_connections or lower other clients' pools", e.Message)
	case "55000":
		if strings.Contains(e.Message, "wal_level") {
			return fmt.Sprintf("%s; set wal_level = logical in postgresql.conf (on Neon: enable logical replication) and restart the server", e.Message)
		}
	}
	msg := e.Message
	if e.Detail != "" {
		msg += " (" + e.Detail + ")"
	}
	if e.Hint != "" {
		msg += "; " + e.Hint
	}
	return fmt.Sprintf("postgres: %s [SQLSTATE %s]", msg, e.Code)
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// Code returns the SQLSTATE of err, or "".
func Code(err error) string {
	var pge *pgconn.PgError
	if errors.As(err, &pge) {
		return pge.Code
	}
	return ""
}
