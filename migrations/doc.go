// Package migrations owns edgesync's SQL schema: the embedded goose migrations
// that create the objects of CONTRACT section 3.1 and, on request, the reference
// app schema of section 3.2.
//
// It imports only the standard library, goose and the pgx database/sql driver;
// never another project package.
//
// Invariant: every migration has a working Down, and Up is idempotent and
// serialised by a Postgres advisory lock, so replicas starting together are safe.
package migrations
