// Package cdc owns the logical replication side: server checks, the
// publication and slot, the pgoutput reader, the relation cache, the JSON row
// images, and the confirm tracker that decides which LSN may be confirmed.
//
// It is the vocabulary of the replication stream (Change, Txn, Relation, LSN)
// and imports no other project package but domain (the quoting of names):
// otherwise only pgx, pglogrepl and zap.
//
// Invariant (DESIGN decision 2): the slot is confirmed only up to the end LSN of
// the longest prefix of transactions whose every effect has been reported
// durable; when nothing is in flight, a keepalive's WAL end may be confirmed.
package cdc
