// Package config owns edgesync's settings: the EDGESYNC_* environment variables of
// CONTRACT section 2 and the same keys in a YAML file (lower snake case, no prefix).
//
// It is a leaf: it imports only the standard library and its YAML decoder, never
// another project package. Components never read Config directly; daemon translates
// it into each component's own small Config.
//
// Invariant: a Config that passed Validate is usable as is, and its String form
// never contains a secret.
package config
