// Package doctor checks what a deployment of edgesync needs — the database
// (wal_level, slots, the role, the publication, the app schema, migrations,
// a direct connection), NATS (the stream, the user's permissions), the data
// directory, ICP and the blob host — and says, per check, pass, warn or fail
// with the fix. `edgesync doctor` prints its results.
//
// Each check is a small function of its connection and the configuration,
// so tests can break one thing at a time. Doctor only reads: it never
// changes the database or the stream, and publishes no event (it learns the
// NATS user's publish permissions from the server). The stream and publication rules are the daemon's own
// (sinks/nats.CheckStream, cdc.CheckPublication), so doctor and `run` agree.
//
// It may import config, cdc, migrations and sinks/nats; never daemon or cmd.
package doctor
