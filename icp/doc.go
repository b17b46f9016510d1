// Package icp is the client of the memory-store canister on the Internet Computer.
//
// It owns the canister's Candid interface (memory_store.did, embedded as DID), the Go types that
// mirror it, the typed errors of its Error variants, the UUID and hash spellings the canister
// accepts, and Client: metadata writes, chunked asset uploads that resume from what the canister
// already holds, and status queries, all through agent-go with our own timeouts.
//
// It may import only the standard library, agent-go and its dependencies, zap and domain; never
// Postgres, River, config or another project package. What to store and when is the mirror
// package's business; this package only talks to the canister.
//
// The one invariant: no reply is trusted unless it is certified by the root key. agent-go v0.9.2
// verifies queries and polled replies but not the certificate of a synchronous 200 /call reply, so
// every Client sends through a verifying transport (transport.go) that closes that gap.
package icp
