// Package archtest holds the test that keeps the import directions of
// STYLE.md true. It has no code of its own.
package archtest
