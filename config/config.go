package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgesync/edgesync/domain"
)

// Table maps one app table to a memory type (domain.Table).
type Table = domain.Table

// LegacyColumn describes one storage flag an app kept in its own columns, to be
// imported once into storage_edges (`edgesync reconcile --import-legacy`).
// Column is a boolean on Table that, when true, means the memory's metadata and
// asset are on ICP.
type LegacyColumn struct {
	Table  string `yaml:"table"`
	Column string `yaml:"column"`
}

// Config is every setting of CONTRACT section 2 plus the documented extensions.
type Config struct {
	DatabaseURL   string
	NATSURL       string
	NATSCredsFile string
	// NATSEmbedded allows the embedded NATS server inside Kubernetes, where
	// an empty NATSURL is otherwise refused.
	NATSEmbedded bool
	// StreamReplicas and StreamMaxBytes are used when the daemon creates the
	// stream; an existing stream is never changed (doctor reports it).
	StreamReplicas int
	// StreamMaxBytes bounds the stream's size; 0 means unlimited.
	StreamMaxBytes    int64
	DataDir           string
	HTTPAddr          string
	Slot              string
	Publication       string
	Stream            string
	SubjectPrefix     string
	AdminToken        string
	ReconcileInterval time.Duration
	StuckAfter        time.Duration
	ICPURL            string
	ICPCanisterID     string
	ICPIdentityFile   string
	ICPFetchRootKey   bool
	ICPMaxAttempts    int
	// ICPRetryBase is the first wait before reconcile retries a failed ICP sync;
	// it doubles per round, capped at 24 h.
	ICPRetryBase  time.Duration
	AssetMaxBytes int64
	// AssetHosts is the comma-separated allow-list of host patterns (host,
	// host:port, *.suffix) the ICP mirror may fetch assets from; see AssetHostPatterns.
	AssetHosts string
	// BlobURL is the blob store's base URL, used only for the blob health
	// check (any HTTP answer counts as reachable); empty: not checked.
	BlobURL   string
	LogLevel  string
	LogFormat string

	// Tables maps app tables to memory types (default: the reference app schema).
	Tables []Table
	// SnapshotEvents publishes a `snapshot` memory event for each row read by
	// the initial snapshot. Off by default: the edges the snapshot creates are
	// published as edge events anyway, and a million-row backfill should not
	// flood consumers unless they asked for it.
	SnapshotEvents bool
	// ICPEdgesOnDelete is the policy for icp-canister edges when their memory
	// row is deleted: "keep" (default; Store Forever means forever, the edge
	// records what the canister still holds) or "delete".
	ICPEdgesOnDelete string
	// HeartbeatInterval is how often an idle pipeline emits a
	// pg_logical_emit_message so the slot keeps moving.
	HeartbeatInterval time.Duration
	// ShutdownTimeout bounds the drain on SIGTERM.
	ShutdownTimeout time.Duration
	// LegacyColumns drives --import-legacy.
	LegacyColumns []LegacyColumn
	// SSEMaxClients caps the sync-status stream clients of one instance;
	// beyond it the stream answers 503 with Retry-After.
	SSEMaxClients int
	// PresenceMaxBytes bounds the API's in-memory presence cache; 0 turns
	// it off (every presence answer reads Postgres).
	PresenceMaxBytes int64

	// inKubernetes is set when KUBERNETES_SERVICE_HOST is in the environment.
	inKubernetes bool

	problems []error
}

// Default returns the configuration with every default of CONTRACT section 2.
func Default() Config {
	return Config{
		DataDir:           "./data",
		HTTPAddr:          ":8080",
		Slot:              "edgesync",
		Publication:       "edgesync",
		Stream:            "EDGESYNC",
		SubjectPrefix:     "edgesync",
		ReconcileInterval: 10 * time.Minute,
		StuckAfter:        15 * time.Minute,
		ICPMaxAttempts:    5,
		ICPRetryBase:      10 * time.Minute,
		AssetHosts:        domain.DefaultAssetHosts,
		StreamReplicas:    1,
		StreamMaxBytes:    1 << 30,
		AssetMaxBytes:     domain.MaxAssetBytes,
		LogLevel:          "info",
		LogFormat:         "json",
		Tables:            domain.DefaultTables(),
		ICPEdgesOnDelete:  "keep",
		HeartbeatInterval: 30 * time.Second,
		ShutdownTimeout:   10 * time.Second,
		SSEMaxClients:     1000,

		PresenceMaxBytes: 8 << 20,
	}
}

// field describes one scalar setting: its file key, its environment name and
// how to store a textual value.
type field struct {
	key    string
	secret bool
	set    func(c *Config, v string) error
	get    func(c *Config) string
}

// Env returns the environment variable name of a file key.
func Env(key string) string { return "EDGESYNC_" + strings.ToUpper(key) }

func str(p func(c *Config) *string) (func(*Config, string) error, func(*Config) string) {
	return func(c *Config, v string) error { *p(c) = v; return nil },
		func(c *Config) string { return *p(c) }
}

func dur(p func(c *Config) *time.Duration) (func(*Config, string) error, func(*Config) string) {
	return func(c *Config, v string) error {
			v = strings.TrimSpace(v)
			if v == "0" {
				*p(c) = 0
				return nil
			}
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("%q is not a duration (try %s)", v, durationHint(v))
			}
			*p(c) = d
			return nil
		}, func(c *Config) string {
			if *p(c) == 0 {
				return "0"
			}
			return p(c).String()
		}
}

func boolean(p func(c *Config) *bool) (func(*Config, string) error, func(*Config) string) {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a boolean (use true or false)", v)
		}
		*p(c) = b
		return nil
	}, func(c *Config) string { return strconv.FormatBool(*p(c)) }
}

func integer(p func(c *Config) *int64) (func(*Config, string) error, func(*Config) string) {
	return func(c *Config, v string) error {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		*p(c) = n
		return nil
	}, func(c *Config) string { return strconv.FormatInt(*p(c), 10) }
}

func mk(key string, secret bool, set func(*Config, string) error, get func(*Config) string) field {
	return field{key: key, secret: secret, set: set, get: get}
}

var fields = func() []field {
	var fs []field
	add := func(key string, secret bool, set func(*Config, string) error, get func(*Config) string) {
		fs = append(fs, mk(key, secret, set, get))
	}
	s := func(key string, secret bool, p func(c *Config) *string) {
		set, get := str(p)
		add(key, secret, set, get)
	}
	s("database_url", true, func(c *Config) *string { return &c.DatabaseURL })
	s("nats_url", true, func(c *Config) *string { return &c.NATSURL })
	s("nats_creds", false, func(c *Config) *string { return &c.NATSCredsFile })
	b := func(key string, p func(c *Config) *bool) { set, get := boolean(p); add(key, false, set, get) }
	b("nats_embedded", func(c *Config) *bool { return &c.NATSEmbedded })
	add("stream_replicas", false, func(c *Config, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		c.StreamReplicas = n
		return nil
	}, func(c *Config) string { return strconv.Itoa(c.StreamReplicas) })
	{
		set, get := integer(func(c *Config) *int64 { return &c.StreamMaxBytes })
		add("stream_max_bytes", false, set, get)
	}
	s("data_dir", false, func(c *Config) *string { return &c.DataDir })
	s("http_addr", false, func(c *Config) *string { return &c.HTTPAddr })
	s("slot", false, func(c *Config) *string { return &c.Slot })
	s("publication", false, func(c *Config) *string { return &c.Publication })
	s("stream", false, func(c *Config) *string { return &c.Stream })
	s("subject_prefix", false, func(c *Config) *string { return &c.SubjectPrefix })
	s("admin_token", true, func(c *Config) *string { return &c.AdminToken })
	d := func(key string, p func(c *Config) *time.Duration) { set, get := dur(p); add(key, false, set, get) }
	d("reconcile_interval", func(c *Config) *time.Duration { return &c.ReconcileInterval })
	d("stuck_after", func(c *Config) *time.Duration { return &c.StuckAfter })
	s("icp_url", false, func(c *Config) *string { return &c.ICPURL })
	s("icp_canister_id", false, func(c *Config) *string { return &c.ICPCanisterID })
	s("icp_identity_file", false, func(c *Config) *string { return &c.ICPIdentityFile })
	b("icp_fetch_root_key", func(c *Config) *bool { return &c.ICPFetchRootKey })
	add("icp_max_attempts", false, func(c *Config, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		c.ICPMaxAttempts = n
		return nil
	}, func(c *Config) string { return strconv.Itoa(c.ICPMaxAttempts) })
	{
		set, get := integer(func(c *Config) *int64 { return &c.AssetMaxBytes })
		add("asset_max_bytes", false, set, get)
	}
	s("blob_url", false, func(c *Config) *string { return &c.BlobURL })
	d("icp_retry_base", func(c *Config) *time.Duration { return &c.ICPRetryBase })
	s("asset_hosts", false, func(c *Config) *string { return &c.AssetHosts })
	s("log_level", false, func(c *Config) *string { return &c.LogLevel })
	s("log_format", false, func(c *Config) *string { return &c.LogFormat })
	b("snapshot_events", func(c *Config) *bool { return &c.SnapshotEvents })
	s("icp_edges_on_delete", false, func(c *Config) *string { return &c.ICPEdgesOnDelete })
	d("heartbeat_interval", func(c *Config) *time.Duration { return &c.HeartbeatInterval })
	d("shutdown_timeout", func(c *Config) *time.Duration { return &c.ShutdownTimeout })
	add("sse_max_clients", false, func(c *Config, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		c.SSEMaxClients = n
		return nil
	}, func(c *Config) string { return strconv.Itoa(c.SSEMaxClients) })
	{
		set, get := integer(func(c *Config) *int64 { return &c.PresenceMaxBytes })
		add("presence_max_bytes", false, set, get)
	}
	add("tables", false, func(c *Config, v string) error {
		t, err := ParseTables(v)
		if err != nil {
			return err
		}
		c.Tables = t
		return nil
	}, func(c *Config) string { return FormatTables(c.Tables) })
	add("legacy_columns", false, func(c *Config, v string) error {
		l, err := parseLegacy(v)
		if err != nil {
			return err
		}
		c.LegacyColumns = l
		return nil
	}, func(c *Config) string { return formatLegacy(c.LegacyColumns) })
	return fs
}()

// durationHint turns "ten minutes" into something that parses, for the error.
func durationHint(v string) string {
	lv := strings.ToLower(v)
	switch {
	case strings.Contains(lv, "hour"):
		return "1h"
	case strings.Contains(lv, "sec"):
		return "30s"
	case strings.Contains(lv, "ms"), strings.Contains(lv, "milli"):
		return "500ms"
	}
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		return strconv.Itoa(n) + "s"
	}
	return "10m"
}

// Load reads the YAML file at path (if path is non-empty), then the
// environment through lookup (os.LookupEnv when nil); the environment wins.
// Problems with individual values are kept and reported by Validate, so a
// caller sees every problem at once; Load itself fails only when the file
// cannot be read or is not YAML.
func Load(path string, lookup func(string) (string, bool)) (Config, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	c := Default()
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("--config %s: %w", path, unwrapPathError(err))
		}
		if err := c.applyYAML(path, raw); err != nil {
			return c, err
		}
	}
	if v, ok := lookup("KUBERNETES_SERVICE_HOST"); ok && v != "" {
		c.inKubernetes = true
	}
	for _, f := range fields {
		if v, ok := lookup(Env(f.key)); ok {
			if err := f.set(&c, v); err != nil {
				c.problems = append(c.problems, fmt.Errorf("%s: %w", Env(f.key), err))
			}
		}
	}
	return c, nil
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// fileTables and fileLegacy accept the structured YAML forms.
type fileTables []Table
type fileLegacy []LegacyColumn

func (c *Config) applyYAML(path string, raw []byte) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("--config %s: not valid YAML: %v", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("--config %s: expected a mapping of settings (key: value), got %s", path, kindName(root.Kind))
	}
	byKey := map[string]field{}
	for _, f := range fields {
		byKey[f.key] = f
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		f, ok := byKey[k.Value]
		if !ok {
			c.problems = append(c.problems, fmt.Errorf("%s (in %s, line %d): unknown setting (known: %s)", k.Value, path, k.Line, knownKeys()))
			continue
		}
		where := fmt.Sprintf("%s (in %s, line %d)", k.Value, path, k.Line)
		switch {
		case k.Value == "tables" && v.Kind == yaml.SequenceNode:
			var ts fileTables
			if err := v.Decode(&ts); err != nil {
				c.problems = append(c.problems, fmt.Errorf("%s: %v", where, err))
				continue
			}
			c.Tables = ts
		case k.Value == "legacy_columns" && v.Kind == yaml.SequenceNode:
			var ls fileLegacy
			if err := v.Decode(&ls); err != nil {
				c.problems = append(c.problems, fmt.Errorf("%s: %v", where, err))
				continue
			}
			c.LegacyColumns = ls
		case v.Kind == yaml.ScalarNode:
			if err := f.set(c, v.Value); err != nil {
				c.problems = append(c.problems, fmt.Errorf("%s: %w", where, err))
			}
		default:
			c.problems = append(c.problems, fmt.Errorf("%s: expected a single value, got %s", where, kindName(v.Kind)))
		}
	}
	return nil
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		return "a value"
	}
	return "nothing"
}

func knownKeys() string {
	ks := make([]string, 0, len(fields))
	for _, f := range fields {
		ks = append(ks, f.key)
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

// ParseTables reads the compact form "images=image:url:size_bytes,notes=note".
// The table name may be schema-qualified.
func ParseTables(v string) ([]Table, error) {
	var out []Table
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, rest, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%q: expected table=memory_type[:url_column[:size_column]] (e.g. images=image:url:size_bytes)", part)
		}
		bits := strings.Split(rest, ":")
		if len(bits) > 3 {
			return nil, fmt.Errorf("%q: too many ':' parts (table=memory_type[:url_column[:size_column]])", part)
		}
		t := Table{Name: strings.TrimSpace(name), MemoryType: strings.TrimSpace(bits[0])}
		if len(bits) > 1 {
			t.URLColumn = strings.TrimSpace(bits[1])
		}
		if len(bits) > 2 {
			t.SizeColumn = strings.TrimSpace(bits[2])
		}
		out = append(out, t)
	}
	return out, nil
}

// FormatTables is the inverse of ParseTables.
func FormatTables(ts []Table) string {
	parts := make([]string, 0, len(ts))
	for _, t := range ts {
		s := t.Name + "=" + t.MemoryType
		if t.URLColumn != "" || t.SizeColumn != "" {
			s += ":" + t.URLColumn
		}
		if t.SizeColumn != "" {
			s += ":" + t.SizeColumn
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ",")
}

func parseLegacy(v string) ([]LegacyColumn, error) {
	var out []LegacyColumn
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		t, col, ok := strings.Cut(part, ".")
		if !ok || t == "" || col == "" {
			return nil, fmt.Errorf("%q: expected table.column (e.g. images.stored_on_icp)", part)
		}
		out = append(out, LegacyColumn{Table: t, Column: col})
	}
	return out, nil
}

func formatLegacy(ls []LegacyColumn) string {
	parts := make([]string, 0, len(ls))
	for _, l := range ls {
		parts = append(parts, l.Table+"."+l.Column)
	}
	return strings.Join(parts, ",")
}

var (
	streamRe  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	subjectRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

// ValidIdent reports whether s is a plain lower-case SQL identifier that can be
// used unquoted (slot, publication, column names).
func ValidIdent(s string) bool { return domain.ValidIdent(s) }

// Validate returns every problem, each naming the setting and the fix.
func (c Config) Validate() error {
	errs := append([]error(nil), c.problems...)
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", Env(key), fmt.Sprintf(format, args...)))
	}
	if strings.TrimSpace(c.DatabaseURL) == "" {
		bad("database_url", "is required (e.g. postgres://edgesync:PASSWORD@db:5432/app?sslmode=require)")
	} else if err := checkDatabaseURL(c.DatabaseURL); err != nil {
		bad("database_url", "%v", err)
	}
	if c.NATSURL != "" {
		for _, u := range strings.Split(c.NATSURL, ",") {
			pu, err := url.Parse(strings.TrimSpace(u))
			if err != nil || pu.Host == "" {
				bad("nats_url", "%q is not a NATS URL (e.g. nats://nats:4222; leave empty for the embedded server)", redactURL(u))
				break
			}
		}
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		bad("stream_replicas", "%d is out of range (1-5; 3 for a production JetStream cluster)", c.StreamReplicas)
	}
	if c.StreamMaxBytes < 0 {
		bad("stream_max_bytes", "must not be negative (bytes, e.g. 1073741824; 0 for unlimited)")
	}
	if c.DataDir == "" {
		bad("data_dir", "must not be empty (default ./data)")
	}
	if _, port, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		bad("http_addr", "%q is not host:port (e.g. :8080)", c.HTTPAddr)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		bad("http_addr", "%q has no valid port (0-65535)", c.HTTPAddr)
	}
	if !ValidIdent(c.Slot) {
		bad("slot", "%q is not a valid slot name (lower-case letters, digits and _, at most 63)", c.Slot)
	}
	if !ValidIdent(c.Publication) {
		bad("publication", "%q is not a valid publication name (lower-case letters, digits and _, at most 63)", c.Publication)
	}
	if !streamRe.MatchString(c.Stream) {
		bad("stream", "%q is not a valid JetStream name (letters, digits, - and _)", c.Stream)
	}
	if !subjectRe.MatchString(c.SubjectPrefix) {
		bad("subject_prefix", "%q is not one subject token (letters, digits, - and _; no dots or wildcards)", c.SubjectPrefix)
	}
	if c.ReconcileInterval < 0 {
		bad("reconcile_interval", "must not be negative (0 turns the periodic reconcile off)")
	} else if c.ReconcileInterval > 0 && c.ReconcileInterval < time.Second {
		bad("reconcile_interval", "%s is too short (at least 1s, or 0 for off)", c.ReconcileInterval)
	}
	if c.StuckAfter <= 0 {
		bad("stuck_after", "must be positive (e.g. 15m)")
	}
	if c.ICPURL != "" {
		if u, err := url.Parse(c.ICPURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("icp_url", "%q is not an http(s) URL (e.g. http://127.0.0.1:4943)", c.ICPURL)
		}
		if c.ICPCanisterID == "" {
			bad("icp_canister_id", "is required when EDGESYNC_ICP_URL is set (the memory-store canister's principal)")
		}
	}
	if c.BlobURL != "" {
		if u, err := url.Parse(c.BlobURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("blob_url", "%q is not an http(s) URL (e.g. https://store.public.blob.vercel-storage.com)", c.BlobURL)
		}
	}
	if c.ICPMaxAttempts < 1 || c.ICPMaxAttempts > 100 {
		bad("icp_max_attempts", "%d is out of range (1-100)", c.ICPMaxAttempts)
	}
	switch {
	case c.AssetMaxBytes <= 0:
		bad("asset_max_bytes", "must be positive (bytes, e.g. %d)", domain.MaxAssetBytes)
	case c.AssetMaxBytes > domain.MaxAssetBytes:
		bad("asset_max_bytes", "%d is more than the memory-store canister stores (%d bytes, 64 MiB): a larger asset would be downloaded and then refused; set at most %d",
			c.AssetMaxBytes, domain.MaxAssetBytes, domain.MaxAssetBytes)
	}
	if c.ICPRetryBase < time.Second || c.ICPRetryBase > 24*time.Hour {
		bad("icp_retry_base", "%s is out of range (1s to 24h, e.g. 10m)", c.ICPRetryBase)
	}
	if hosts, err := domain.ParseHostPatterns(c.AssetHosts); err != nil {
		bad("asset_hosts", "%v", err)
	} else if len(hosts) == 0 {
		bad("asset_hosts", "must name at least one host pattern (default %s)", domain.DefaultAssetHosts)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "%q is not a level (debug, info, warn or error)", c.LogLevel)
	}
	switch c.LogFormat {
	case "json", "console":
	default:
		bad("log_format", "%q is not a format (json or console)", c.LogFormat)
	}
	switch c.ICPEdgesOnDelete {
	case "keep", "delete":
	default:
		bad("icp_edges_on_delete", "%q is not a policy (keep or delete)", c.ICPEdgesOnDelete)
	}
	if c.HeartbeatInterval < time.Second {
		bad("heartbeat_interval", "%s is too short (at least 1s)", c.HeartbeatInterval)
	}
	if c.ShutdownTimeout < time.Second {
		bad("shutdown_timeout", "%s is too short (at least 1s)", c.ShutdownTimeout)
	}
	if c.SSEMaxClients < 1 || c.SSEMaxClients > 100000 {
		bad("sse_max_clients", "%d is out of range (1-100000; each idle client holds about 40 KiB)", c.SSEMaxClients)
	}
	if c.PresenceMaxBytes < 0 || c.PresenceMaxBytes > 1<<30 {
		bad("presence_max_bytes", "%d is out of range (0-1073741824 bytes, e.g. 8388608; 0 turns the presence cache off)", c.PresenceMaxBytes)
	}
	errs = append(errs, validateTables(c.Tables)...)
	for _, l := range c.LegacyColumns {
		if !domain.ValidQualified(l.Table) || !ValidIdent(l.Column) {
			bad("legacy_columns", "%s.%s is not a valid table.column", l.Table, l.Column)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return errors.New(c.Scrub(err.Error()))
	}
	return nil
}

func validateTables(ts []Table) []error {
	var errs []error
	for _, err := range domain.ValidateTables(ts) {
		errs = append(errs, fmt.Errorf("%s: %w", Env("tables"), err))
	}
	return errs
}

func checkDatabaseURL(s string) error {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		u, err := url.Parse(s)
		if err != nil {
			// The parser's message may quote part of the password.
			return fmt.Errorf("%q is not a valid URL (percent-encode special characters in the password, e.g. @ as %%40)", redactDatabaseURL(s))
		}
		if u.Host == "" {
			return fmt.Errorf("%q has no host (e.g. postgres://user:PASSWORD@host:5432/db)", redactDatabaseURL(s))
		}
		return nil
	}
	if isDSN(s) {
		return nil
	}
	return errors.New("is neither a postgres:// URL nor a key=value DSN (host=... user=... dbname=...)")
}

// RedactURL hides what authenticates in a URL, a comma-separated list of
// NATS URLs or a key=value DSN (passwords, tokens), keeping the rest.
func RedactURL(s string) string { return redactURL(s) }

func redactURL(s string) string {
	switch {
	case s == "":
		return ""
	case strings.HasPrefix(s, "postgres://"), strings.HasPrefix(s, "postgresql://"):
		return redactDatabaseURL(s)
	case strings.Contains(s, "://"), strings.Contains(s, "@"):
		return redactNATSURLs(s)
	case strings.Contains(s, "="):
		return redactDatabaseURL(s)
	}
	return s
}

// Setting is one key and its printable (redacted) value.
type Setting struct {
	Env   string `json:"env"`
	Value string `json:"value"`
}

// Settings lists every setting with secrets redacted, in a stable order.
func (c Config) Settings() []Setting {
	out := make([]Setting, 0, len(fields))
	for _, f := range fields {
		v := f.get(&c)
		if f.secret {
			v = redactSecret(f.key, v)
		}
		out = append(out, Setting{Env: Env(f.key), Value: v})
	}
	return out
}

// String prints the configuration with secrets redacted.
func (c Config) String() string {
	var b strings.Builder
	for _, s := range c.Settings() {
		fmt.Fprintf(&b, "%s=%s\n", s.Env, s.Value)
	}
	return b.String()
}

// GoString keeps %#v from printing secrets.
func (c Config) GoString() string { return "config.Config{\n" + c.String() + "}" }

// InKubernetes reports whether the process runs in a Kubernetes pod
// (KUBERNETES_SERVICE_HOST was set when the configuration was loaded).
func (c Config) InKubernetes() bool { return c.inKubernetes }

// CheckEmbeddedNATS refuses the embedded NATS server inside Kubernetes
// unless EDGESYNC_NATS_EMBEDDED says it is wanted: in a pod its store is
// lost with the pod, and no other service would ever see the events the
// slot was confirmed past.
func (c Config) CheckEmbeddedNATS() error {
	if c.NATSURL != "" || !c.inKubernetes || c.NATSEmbedded {
		return nil
	}
	return errors.New("EDGESYNC_NATS_URL is empty inside Kubernetes: set it to your NATS server (e.g. nats://nats.nats.svc:4222), or set EDGESYNC_NATS_EMBEDDED=true to run the embedded development server in this pod on purpose")
}

// MemoryTable returns the table mapped to a memory type.
func (c Config) MemoryTable(memoryType string) (Table, bool) {
	for _, t := range c.Tables {
		if t.MemoryType == memoryType {
			return t, true
		}
	}
	return Table{}, false
}

// AssetHostPatterns is AssetHosts parsed (Validate reports a bad one; here it yields no pattern).
func (c Config) AssetHostPatterns() []domain.HostPattern {
	p, err := domain.ParseHostPatterns(c.AssetHosts)
	if err != nil {
		return nil
	}
	return p
}
