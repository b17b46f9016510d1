package config

import (
	"fmt"
	"strings"
)

// about documents one setting for docs/configuration.md: what it means and
// the release that introduced it. Every field has one (a test checks it).
type about struct {
	meaning string
	since   string
}

// Releases: 0.1.0 is the first; "next" marks settings of the coming one.
var abouts = map[string]about{
	"database_url":        {"Postgres URL (`postgres://user:PASSWORD@host:5432/db?sslmode=require`) or key=value DSN. Required. A direct (not pooled) connection: logical replication does not pass through PgBouncer. The role needs REPLICATION and either ownership of the published tables or an existing publication (see deploy.md).", "0.1.0"},
	"nats_url":            {"NATS server(s), comma-separated. Empty: `run` starts an embedded NATS server with JetStream under EDGESYNC_DATA_DIR (development) — inside Kubernetes only with EDGESYNC_NATS_EMBEDDED=true.", "0.1.0"},
	"nats_embedded":       {"Allow the embedded NATS server inside Kubernetes (KUBERNETES_SERVICE_HOST set), where an empty EDGESYNC_NATS_URL otherwise refuses to start.", "next"},
	"stream_replicas":     {"Replicas of the JetStream stream when the daemon creates it (3 on a production cluster). An existing stream is never changed; `edgesync doctor` reports its settings.", "next"},
	"stream_max_bytes":    {"Size limit of the stream in bytes when the daemon creates it (oldest events are discarded past it); 0 is unlimited.", "next"},
	"nats_creds":          {"NATS credentials file (`.creds`: JWT and NKey seed); empty: no credentials.", "0.1.0"},
	"data_dir":            {"Where the daemon keeps files: the embedded development NATS server's store and the ICP mirror's spool (`spool/`, assets over 4 MiB while they upload; checked and emptied at start); `doctor` checks it is writable with room for the configured asset size.", "0.1.0"},
	"http_addr":           {"Listen address of the HTTP API, health and metrics.", "0.1.0"},
	"slot":                {"Logical replication slot.", "0.1.0"},
	"publication":         {"Publication over the memory tables, `gallery_items` and `storage_edges`.", "0.1.0"},
	"stream":              {"JetStream stream the events are stored in.", "0.1.0"},
	"subject_prefix":      {"First token of every subject.", "0.1.0"},
	"admin_token":         {"Bearer token for every write and admin endpoint; empty: those endpoints answer 403 and the log says why.", "0.1.0"},
	"reconcile_interval":  {"Periodic reconcile; `0` turns it off.", "0.1.0"},
	"stuck_after":         {"A `migrating` edge older than this is stuck.", "0.1.0"},
	"icp_url":             {"ICP replica / boundary node URL; empty: the ICP mirror is off.", "0.1.0"},
	"icp_canister_id":     {"The memory-store canister's principal (required with EDGESYNC_ICP_URL).", "0.1.0"},
	"icp_identity_file":   {"PEM private key (Ed25519 or secp256k1) the mirror signs with; empty: anonymous.", "0.1.0"},
	"icp_fetch_root_key":  {"Fetch the root key from the replica (local replicas only; never on mainnet).", "0.1.0"},
	"icp_max_attempts":    {"Upload attempts of one mirror job (one round) before its edges turn `failed`.", "0.1.0"},
	"icp_retry_base":      {"First wait before a `failed` ICP sync gets its next round of attempts (reconcile re-queues it when due); doubles per round up to 24 h, 10 rounds, then the sync_error says what to do.", "next"},
	"asset_hosts":         {"Comma-separated host patterns (`host`, `host:port`, `*.suffix`) the mirror may fetch assets from, also as redirect targets; anything else ends `failed` with a sync_error naming this setting. Loopback, private and link-local addresses are refused unless a pattern names them explicitly.", "next"},
	"sse_max_clients":     {"Most SSE clients one instance serves at once; beyond it the stream answers 503 with Retry-After.", "next"},
	"presence_max_bytes":  {"Bound, in bytes, of each instance's in-memory presence cache (gallery first pages and memory presence, plus the membership index of the cached galleries; least recently used entries are evicted; one gallery or answer may take at most a quarter: at the default, galleries of up to about 18,000 memories). Part of the process's memory: keep it well under GOMEMLIMIT. 0 turns the cache off: every presence answer reads Postgres.", "next"},
	"asset_max_bytes":     {"Largest asset the mirror fetches and uploads; larger memories fail at once with a sync_error naming this setting. At most 67108864 (64 MiB, the largest asset the memory-store canister stores, and the default): a larger value is a configuration error. `doctor` checks the data directory has room for it.", "0.1.0"},
	"blob_url":            {"The blob store's base URL, used for the blob health check and `doctor` (any HTTP answer counts as reachable); empty: not checked.", "0.1.0"},
	"log_level":           {"debug, info, warn or error.", "0.1.0"},
	"log_format":          {"json or console.", "0.1.0"},
	"snapshot_events":     {"Publish a `snapshot` memory event for each row read by the initial snapshot.", "0.1.0"},
	"icp_edges_on_delete": {"What happens to `icp-canister` edges when their memory row is deleted: `keep` (the canister still holds it) or `delete`.", "0.1.0"},
	"heartbeat_interval":  {"How often an idle pipeline writes a WAL message so the slot keeps moving.", "0.1.0"},
	"shutdown_timeout":    {"Bound of the drain on SIGTERM.", "0.1.0"},
	"tables":              {"Which app table holds which memory type: `table=memory_type[:url_column[:size_column]]`, comma-separated (a YAML list in the file); tables may be schema-qualified.", "0.1.0"},
	"legacy_columns":      {"Boolean `table.column`s that meant \"on ICP\" in an older app, imported once by `edgesync reconcile --import-legacy`.", "0.1.0"},
}

// SettingDoc describes one setting for people.
type SettingDoc struct {
	Env     string
	Key     string
	Default string
	Meaning string
	Since   string
	Secret  bool
}

// Reference lists every setting with its default, meaning and release.
func Reference() []SettingDoc {
	def := Default()
	out := make([]SettingDoc, 0, len(fields))
	for _, f := range fields {
		a := abouts[f.key]
		d := f.get(&def)
		out = append(out, SettingDoc{Env: Env(f.key), Key: f.key, Default: d, Meaning: a.meaning, Since: a.since, Secret: f.secret})
	}
	return out
}

// ReferenceMarkdown renders docs/configuration.md.
func ReferenceMarkdown() string {
	var b strings.Builder
	b.WriteString(`# Configuration

<!-- Generated from config/reference.go by ` + "`go test ./config -run TestReference_Doc -update`" + `; do not edit by hand. -->

Every setting is an environment variable; ` + "`--config FILE`" + ` reads the same settings from YAML, keyed by the
lower-case name without the prefix (` + "`database_url: ...`" + `). The environment wins over the file. ` + "`edgesync status`" + `
prints the effective values, with secrets (marked 🔒 below) redacted. Release 0.1.0 is the first; "next" marks
settings added since.

| variable | file key | default | meaning | since |
|---|---|---|---|---|
`)
	for _, s := range Reference() {
		def := "`" + s.Default + "`"
		if s.Default == "" {
			def = "(empty)"
		}
		if s.Key == "database_url" {
			def = "(required)"
		}
		lock := ""
		if s.Secret {
			lock = " 🔒"
		}
		fmt.Fprintf(&b, "| `%s`%s | `%s` | %s | %s | %s |\n", s.Env, lock, s.Key, strings.ReplaceAll(def, "|", `\|`), strings.ReplaceAll(s.Meaning, "|", `\|`), s.Since)
	}
	b.WriteString(`
Outside the settings, ` + "`KUBERNETES_SERVICE_HOST`" + ` (set by Kubernetes in every pod) makes an empty
` + "`EDGESYNC_NATS_URL`" + ` an error unless ` + "`EDGESYNC_NATS_EMBEDDED=true`" + `, and ` + "`GOMEMLIMIT`" + ` sets the Go heap target
(default 40 MiB when unset).
`)
	return b.String()
}
