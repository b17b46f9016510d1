package config

import (
	"github.com/edgesync/edgesync/domain"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "edgesync.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefault_MatchesContract(t *testing.T) {
	c := Default()
	want := map[string]string{
		"EDGESYNC_DATABASE_URL":       "",
		"EDGESYNC_NATS_URL":           "",
		"EDGESYNC_DATA_DIR":           "./data",
		"EDGESYNC_HTTP_ADDR":          ":8080",
		"EDGESYNC_SLOT":               "edgesync",
		"EDGESYNC_PUBLICATION":        "edgesync",
		"EDGESYNC_STREAM":             "EDGESYNC",
		"EDGESYNC_SUBJECT_PREFIX":     "edgesync",
		"EDGESYNC_ADMIN_TOKEN":        "",
		"EDGESYNC_RECONCILE_INTERVAL": "10m0s",
		"EDGESYNC_STUCK_AFTER":        "15m0s",
		"EDGESYNC_ICP_URL":            "",
		"EDGESYNC_ICP_CANISTER_ID":    "",
		"EDGESYNC_ICP_IDENTITY_FILE":  "",
		"EDGESYNC_ICP_FETCH_ROOT_KEY": "false",
		"EDGESYNC_ICP_RETRY_BASE":     "10m0s",
		"EDGESYNC_ASSET_HOSTS":        "*.public.blob.vercel-storage.com",
		"EDGESYNC_LOG_LEVEL":          "info",
		"EDGESYNC_LOG_FORMAT":         "json",
		"EDGESYNC_SSE_MAX_CLIENTS":    "1000",
		"EDGESYNC_PRESENCE_MAX_BYTES": "8388608",
	}
	got := map[string]string{}
	for _, s := range c.Settings() {
		got[s.Env] = s.Value
	}
	for k, v := range want {
		if gv, ok := got[k]; !ok || gv != v {
			t.Errorf("%s = %q (present %v), want %q", k, gv, ok, v)
		}
	}
}

func TestLoad_EnvWinsOverFile(t *testing.T) {
	p := writeFile(t, "database_url: postgres://file@h/db\nslot: from_file\nreconcile_interval: 5m\nhttp_addr: ':9000'\n")
	c, err := Load(p, envMap(map[string]string{"EDGESYNC_SLOT": "from_env"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	if c.Slot != "from_env" {
		t.Errorf("slot = %q, want from_env", c.Slot)
	}
	if c.DatabaseURL != "postgres://file@h/db" || c.ReconcileInterval != 5*time.Minute || c.HTTPAddr != ":9000" {
		t.Errorf("file values not applied: %+v", c.Settings())
	}
}

func TestLoad_TablesFromYAMLList(t *testing.T) {
	p := writeFile(t, `database_url: postgres://u@h/db
tables:
  - table: app.photos
    memory_type: image
    url_column: blob_url
  - table: app.texts
    memory_type: note
`)
	c, err := Load(p, envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Tables) != 2 || c.Tables[0].Name != "app.photos" || c.Tables[0].URLColumn != "blob_url" || c.Tables[1].MemoryType != "note" {
		t.Fatalf("tables = %+v", c.Tables)
	}
}

func TestConfig_Validate(t *testing.T) {
	base := map[string]string{"EDGESYNC_DATABASE_URL": "postgres://u:pw@localhost:5432/db"}
	cases := []struct {
		name string
		env  map[string]string
		want string // substring of the error; empty = valid
	}{
		{"defaults with url", nil, ""},
		{"missing url", map[string]string{"EDGESYNC_DATABASE_URL": ""}, "EDGESYNC_DATABASE_URL: is required"},
		{"bad url", map[string]string{"EDGESYNC_DATABASE_URL": "mysql:nope"}, "EDGESYNC_DATABASE_URL"},
		{"duration words", map[string]string{"EDGESYNC_RECONCILE_INTERVAL": "ten minutes"}, `EDGESYNC_RECONCILE_INTERVAL: "ten minutes" is not a duration (try 10m)`},
		{"reconcile off", map[string]string{"EDGESYNC_RECONCILE_INTERVAL": "0"}, ""},
		{"negative stuck", map[string]string{"EDGESYNC_STUCK_AFTER": "-1m"}, "EDGESYNC_STUCK_AFTER: must be positive"},
		{"bad bool", map[string]string{"EDGESYNC_ICP_FETCH_ROOT_KEY": "yes please"}, "EDGESYNC_ICP_FETCH_ROOT_KEY"},
		{"bad slot", map[string]string{"EDGESYNC_SLOT": "My-Slot"}, "EDGESYNC_SLOT"},
		{"bad publication", map[string]string{"EDGESYNC_PUBLICATION": "x; drop table y"}, "EDGESYNC_PUBLICATION"},
		{"bad prefix", map[string]string{"EDGESYNC_SUBJECT_PREFIX": "a.b"}, "EDGESYNC_SUBJECT_PREFIX"},
		{"bad stream", map[string]string{"EDGESYNC_STREAM": "a b"}, "EDGESYNC_STREAM"},
		{"bad addr", map[string]string{"EDGESYNC_HTTP_ADDR": "8080"}, "EDGESYNC_HTTP_ADDR"},
		{"bad level", map[string]string{"EDGESYNC_LOG_LEVEL": "loud"}, "EDGESYNC_LOG_LEVEL"},
		{"bad format", map[string]string{"EDGESYNC_LOG_FORMAT": "xml"}, "EDGESYNC_LOG_FORMAT"},
		{"icp without canister", map[string]string{"EDGESYNC_ICP_URL": "http://127.0.0.1:4943"}, "EDGESYNC_ICP_CANISTER_ID: is required"},
		{"icp bad url", map[string]string{"EDGESYNC_ICP_URL": "ftp://x", "EDGESYNC_ICP_CANISTER_ID": "aaaaa-aa"}, "EDGESYNC_ICP_URL"},
		{"bad nats", map[string]string{"EDGESYNC_NATS_URL": "::::"}, "EDGESYNC_NATS_URL"},
		{"tables bad type", map[string]string{"EDGESYNC_TABLES": "images=picture:url"}, `"picture" is not a memory type`},
		{"tables dup type", map[string]string{"EDGESYNC_TABLES": "a=image:url,b=image:url"}, "mapped to two tables"},
		{"tables bad name", map[string]string{"EDGESYNC_TABLES": "Robert'); drop=image"}, "not a valid table name"},
		{"tables syntax", map[string]string{"EDGESYNC_TABLES": "images"}, "expected table=memory_type"},
		{"tables ok", map[string]string{"EDGESYNC_TABLES": "public.photos=image:blob_url:bytes,notes=note"}, ""},
		{"policy", map[string]string{"EDGESYNC_ICP_EDGES_ON_DELETE": "archive"}, "EDGESYNC_ICP_EDGES_ON_DELETE"},
		{"attempts", map[string]string{"EDGESYNC_ICP_MAX_ATTEMPTS": "0"}, "EDGESYNC_ICP_MAX_ATTEMPTS"},
		{"legacy", map[string]string{"EDGESYNC_LEGACY_COLUMNS": "images"}, "expected table.column"},
		{"retry base short", map[string]string{"EDGESYNC_ICP_RETRY_BASE": "10ms"}, "EDGESYNC_ICP_RETRY_BASE: 10ms is out of range"},
		{"retry base ok", map[string]string{"EDGESYNC_ICP_RETRY_BASE": "2s"}, ""},
		{"asset hosts ok", map[string]string{"EDGESYNC_ASSET_HOSTS": "*.public.blob.vercel-storage.com, cdn.example.com:8443,127.0.0.1:9000,[::1]:80"}, ""},
		{"asset hosts empty", map[string]string{"EDGESYNC_ASSET_HOSTS": " , "}, "EDGESYNC_ASSET_HOSTS: must name at least one"},
		{"asset hosts url", map[string]string{"EDGESYNC_ASSET_HOSTS": "https://blob.example.com/x"}, `EDGESYNC_ASSET_HOSTS: "https://blob.example.com/x"`},
		{"asset hosts bare wildcard", map[string]string{"EDGESYNC_ASSET_HOSTS": "*"}, `EDGESYNC_ASSET_HOSTS: "*"`},
		{"asset hosts bad port", map[string]string{"EDGESYNC_ASSET_HOSTS": "blob.example.com:99999"}, "port"},
		{"asset hosts wildcard ip", map[string]string{"EDGESYNC_ASSET_HOSTS": "*.127.0.0.1"}, "wildcard"},
		{"sse cap zero", map[string]string{"EDGESYNC_SSE_MAX_CLIENTS": "0"}, "EDGESYNC_SSE_MAX_CLIENTS: 0 is out of range"},
		{"sse cap words", map[string]string{"EDGESYNC_SSE_MAX_CLIENTS": "lots"}, `EDGESYNC_SSE_MAX_CLIENTS: "lots" is not a whole number`},
		{"sse cap ok", map[string]string{"EDGESYNC_SSE_MAX_CLIENTS": "2500"}, ""},
		{"presence cache negative", map[string]string{"EDGESYNC_PRESENCE_MAX_BYTES": "-1"}, "EDGESYNC_PRESENCE_MAX_BYTES: -1 is out of range"},
		{"presence cache words", map[string]string{"EDGESYNC_PRESENCE_MAX_BYTES": "8MiB"}, `EDGESYNC_PRESENCE_MAX_BYTES: "8MiB" is not a whole number`},
		{"presence cache off", map[string]string{"EDGESYNC_PRESENCE_MAX_BYTES": "0"}, ""},
		{"asset max at the canister's", map[string]string{"EDGESYNC_ASSET_MAX_BYTES": "67108864"}, ""},
		{"asset max smaller", map[string]string{"EDGESYNC_ASSET_MAX_BYTES": "1048576"}, ""},
		{"asset max over the canister's", map[string]string{"EDGESYNC_ASSET_MAX_BYTES": "1073741824"},
			"EDGESYNC_ASSET_MAX_BYTES: 1073741824 is more than the memory-store canister stores (67108864 bytes, 64 MiB)"},
		{"asset max zero", map[string]string{"EDGESYNC_ASSET_MAX_BYTES": "0"}, "EDGESYNC_ASSET_MAX_BYTES: must be positive"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tc.env {
				env[k] = v
			}
			c, err := Load("", envMap(env))
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "pw@") {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

func TestLoad_FileProblems(t *testing.T) {
	cases := []struct{ body, want string }{
		{"slot: [a, b]\n", "slot (in"},
		{"nonsense: 1\n", "nonsense (in"},
		{"- just\n- a list\n", "expected a mapping"},
		{"a: b: c:\n", "not valid YAML"},
		{"stuck_after: forever\n", "stuck_after (in"},
	}
	for _, tc := range cases {
		p := writeFile(t, tc.body)
		c, err := Load(p, envMap(map[string]string{"EDGESYNC_DATABASE_URL": "postgres://u@h/d"}))
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("body %q: error %v, want %q", tc.body, err, tc.want)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), nil); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}

func TestConfig_StringRedactsSecrets(t *testing.T) {
	c, _ := Load("", envMap(map[string]string{
		"EDGESYNC_DATABASE_URL": "postgres://app:s3cret-pw@db:5432/app?sslmode=require",
		"EDGESYNC_ADMIN_TOKEN":  "tok-very-secret",
		"EDGESYNC_NATS_URL":     "nats://user:natspass@nats:4222",
	}))
	for _, out := range []string{c.String(), c.GoString()} {
		for _, secret := range []string{"s3cret-pw", "tok-very-secret", "natspass"} {
			if strings.Contains(out, secret) {
				t.Fatalf("printed config leaks %q:\n%s", secret, out)
			}
		}
		if !strings.Contains(out, "postgres://app:REDACTED@db:5432/app") {
			t.Fatalf("redacted URL lost its shape:\n%s", out)
		}
	}
	if got := RedactURL("host=db user=a password=hunter2 dbname=x"); strings.Contains(got, "hunter2") {
		t.Fatalf("DSN password leaked: %s", got)
	}
	if got := RedactURL("postgres://a@h/d?password=hunter2"); strings.Contains(got, "hunter2") {
		t.Fatalf("query password leaked: %s", got)
	}
}

func TestTables_RoundTrip(t *testing.T) {
	in := "images=image:url:size_bytes,notes=note,v=video:u"
	ts, err := ParseTables(in)
	if err != nil {
		t.Fatal(err)
	}
	if got := FormatTables(ts); got != in {
		t.Fatalf("round trip %q -> %q", in, got)
	}
	if got := FormatTables(domain.DefaultTables()); got == "" {
		t.Fatal("default tables format empty")
	}
}

// FuzzLoad feeds arbitrary YAML and environment values through Load and
// Validate: they must never panic, and never echo a password.
func FuzzLoad(f *testing.F) {
	f.Add("slot: a\nreconcile_interval: 10m\n", "ten minutes", "images=image:url")
	f.Add("tables:\n  - table: x\n    memory_type: note\n", "0", "")
	f.Add("{{{", "-5s", "a=b:c:d:e")
	f.Add("database_url: [1,2]\n", "1h", ",,,=")
	f.Fuzz(func(t *testing.T, yml, interval, tables string) {
		dir := t.TempDir()
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(yml), 0o600); err != nil {
			t.Fatal(err)
		}
		env := map[string]string{
			"EDGESYNC_DATABASE_URL":       "postgres://u:fuzzsecret@h/d",
			"EDGESYNC_RECONCILE_INTERVAL": interval,
			"EDGESYNC_TABLES":             tables,
		}
		c, err := Load(p, envMap(env))
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil && strings.Contains(err.Error(), "fuzzsecret") {
			t.Fatalf("validation error leaks the password: %v", err)
		}
		if strings.Contains(c.String(), "fuzzsecret") {
			t.Fatal("String leaks the password")
		}
	})
}
