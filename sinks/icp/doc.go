// Package icp mirrors memories to the memory-store canister on the Internet Computer.
//
// It owns the canister's Candid interface (memory_store.did, embedded as DID), the Go types that
// mirror it, and Client: metadata writes, chunked asset uploads that resume from what the canister
// already holds, and status queries, all through agent-go with our own timeouts. On top of the
// client, Mirror runs the durable mirror jobs (River, in Postgres) that the icp-canister edges
// ask for, and records their outcome on those edges.
//
// It may import only the standard library, agent-go and its dependencies, pgx, River, zap,
// Prometheus, and the cdc types; never config, daemon or another sink: the daemon translates its
// configuration into Config and MirrorConfig.
//
// The one invariant: no reply is trusted unless it is certified by the root key. agent-go v0.9.2
// verifies queries and polled replies but not the certificate of a synchronous 200 /call reply, so
// every Client sends through a verifying transport (transport.go) that closes that gap.
package icp
