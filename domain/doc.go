// Package domain is edgesync's vocabulary: memory types, backends, artifacts,
// sync states, the table mapping and its one validation rule, SQL identifier
// quoting, the canonical-UUID check and the NATS subject builders.
//
// It owns the spelling of every domain fact; no other package writes a backend
// name, a memory-type list or a subject by hand.
//
// Must not import: any other edgesync package (it is the leaf every other
// package may import).
//
// Invariant: every value here matches the SQL enums of the migrations
// (memory_type_t, backend_t, artifact_t, sync_t) in spelling and order.
package domain
