// Package icpreplica is a local double of an Internet Computer replica hosting the memory-store
// canister (icp/memory_store.did), for development and tests. It speaks the IC HTTP interface
// as agent-go v0.9.2 does: CBOR envelopes, request ids, sender signatures (anonymous, Ed25519,
// secp256k1, P-256), certificates signed with BLS by its own root key, node-signed query replies,
// the 2 MiB ingress limit with the replica's 413 wording, and synchronous or polled calls.
// Switches inject latency, failures, restarts and certificates signed by a foreign key.
//
// It may import the standard library, agent-go and its dependencies, zap, and icp (the client package) for the
// canister's Candid types; nothing else of the project, and nothing of the project imports it
// outside tests and cmd/icp-replica.
//
// The one invariant: every certificate it serves verifies against RootKey, unless the foreign-key
// switch is on; that is what makes the double a real test of a client's verification.
package icpreplica
