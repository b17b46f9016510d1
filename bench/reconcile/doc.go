// Package reconcilebench measures a reconcile run on a million memories
// against the same work written as plain, whole-table set-based SQL: the
// yardstick of what a one-shot repair costs with no chunking, no lock and no
// bookkeeping (and Postgres's parallel workers). Run it with `make bench`;
// it prints one line with both ratios and reports them as benchmark metrics.
//
// It imports reconcile and internal/pgtest only.
//
// Invariant: both sides start from byte-identical data (the yardstick runs on
// a CREATE DATABASE … TEMPLATE copy) and must find and fix the same counts.
package reconcilebench
