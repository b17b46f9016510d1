// Package canister holds the Motoko source of the memory-store canister (src/), its interpreter
// tests (test/) and the scenarios it shares with the Go replica double (scenarios/). The Go code
// here is only tests: they build the canister with the pinned Motoko compiler from tools/node,
// check that its Candid interface is icp/memory_store.did, and run the interpreter tests.
//
// It imports nothing of the project but internal/nodetools (in tests). The one invariant: the
// interface the compiler derives from the source equals memory_store.did, method by method.
package canister
