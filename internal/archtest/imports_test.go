package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/edgesync/edgesync"

// rules: for a package prefix, the project packages it must not import.
// Prefixes are relative to the module; the longest matching prefix wins.
var rules = map[string][]string{
	"domain":              {""},                                                   // the vocabulary: a leaf
	"cdc":                 {"", "!domain"},                                        // only the vocabulary
	"config":              {"", "!domain"},                                        // only the vocabulary
	"migrations":          {""},                                                   // a leaf
	"sinks/edges":         {"", "!cdc", "!domain"},                                // only cdc (types) and the vocabulary
	"sinks/nats":          {"", "!cdc", "!domain"},                                // only cdc (types) and the vocabulary
	"reconcile":           {"", "!cdc", "!domain"},                                // only cdc (types) and the vocabulary
	"pipeline":            {"", "!cdc", "!domain", "!sinks/edges", "!sinks/nats"}, // the middle stage: cdc, the vocabulary and the sinks it feeds
	"icp":                 {"", "!domain"},                                        // the canister client: no Postgres, no River, no pipeline
	"mirror":              {"", "!cdc", "!domain", "!icp", "!reconcile"},          // the client, event types and the ICPChecker types it implements
	"internal/icpreplica": {"", "!icp"},                                           // the double: only the client's wire types
	"cmd/icp-replica":     {"", "!internal/icpreplica"},
	"daemon":              {"cmd"},                        // everything below it, never cmd
	"internal":            {"cmd", "daemon"},              // helpers never reach up
	"internal/ssefeed":    {"", "!domain"},                // the SSE feed: only the vocabulary (the hub is its own interface)
	"internal/tail":       {"", "!sinks/nats", "!domain"}, // `edgesync tail`: subject matching only; the command passes its options
	"internal/console":    {""},                           // the storage console's embedded files: a leaf the API mounts
	"bench":               {"cmd"},                        // benchmarks drive packages, not main
	// Examples are what another service writes: nats.go only, nothing of ours.
	"examples": {""},
	"deploy":   {"cmd", "daemon"}, // manifests only
	// The production-shape tests drive the built binary from outside.
	"prodtest": {"", "!internal/natstest", "!internal/pgtest", "!internal/testwait"},
	// Polling in tests: a leaf every test package may use.
	"internal/testwait": {""},

	// The presence cache: only the vocabulary (the API passes its reads in,
	// the feed's invalidator is its interface).
	"internal/presencecache": {"", "!domain"},
}

// forbidden reports whether pkg (module-relative) may not import dep.
func forbidden(pkg, dep string) bool {
	best := ""
	for prefix := range rules {
		if (pkg == prefix || strings.HasPrefix(pkg, prefix+"/")) && len(prefix) > len(best) {
			best = prefix
		}
	}
	if best == "" {
		return false
	}
	deny := false
	for _, r := range rules[best] {
		switch {
		case r == "":
			deny = true // everything, unless allowed below
		case strings.HasPrefix(r, "!"):
			if a := r[1:]; dep == a || strings.HasPrefix(dep, a+"/") {
				return false
			}
		case dep == r || strings.HasPrefix(dep, r+"/"):
			return true
		}
	}
	return deny && !strings.HasPrefix(dep, best) // a package may import its own subpackages
}

func TestImportDirections(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(strings.TrimPrefix(fields[0], module), "/")
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			dep := strings.TrimPrefix(imp, module+"/")
			checked++
			if forbidden(pkg, dep) {
				t.Errorf("%s imports %s: STYLE.md forbids it (see the table in internal/archtest)", pkg, dep)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no project imports were checked")
	}
}

func TestForbidden(t *testing.T) {
	cases := []struct {
		pkg, dep string
		want     bool
	}{
		{"cdc", "config", true},
		{"cdc", "domain", false},
		{"domain", "cdc", true},
		{"config", "domain", false},
		{"sinks/edges", "cdc", false},
		{"sinks/edges", "sinks/nats", true},
		{"reconcile", "daemon", true},
		{"daemon", "cmd/edgesync", true},
		{"daemon", "sinks/nats", false},
		{"internal/api", "reconcile", false},
		{"internal/pgtest", "daemon", true},
		{"cmd/edgesync", "daemon", false},
		{"pipeline", "sinks/edges", false},
		{"pipeline", "config", true},
		{"pipeline", "daemon", true},
		{"sinks/edges", "pipeline", true},
		{"icp", "icp/sub", false},
		{"icp", "mirror", true},
		{"icp", "cdc", true},
		{"mirror", "icp", false},
		{"mirror", "reconcile", false},
		{"mirror", "config", true},
		{"mirror", "daemon", true},
		{"reconcile", "mirror", true},
		{"internal/icpreplica", "icp", false},
		{"internal/icpreplica", "mirror", true},
		{"cmd/icp-replica", "internal/icpreplica", false},
		{"cmd/icp-replica", "mirror", true},
		{"internal/ssefeed", "domain", false},
		{"internal/ssefeed", "internal/api", true},
		{"internal/ssefeed", "internal/presencecache", true},
		{"internal/presencecache", "domain", false},
		{"internal/presencecache", "internal/api", true},
		{"internal/api", "internal/presencecache", false},
		{"prodtest", "internal/pgtest", false},
		{"prodtest", "internal/testwait", false},
		{"internal/testwait", "domain", true},
		{"prodtest", "daemon", true},
		{"internal/tail", "sinks/nats", false},
		{"internal/tail", "config", true},
		{"internal/tail", "daemon", true},
		{"examples/consumer", "cdc", true},
		{"examples/consumer", "domain", true},
	}
	for _, c := range cases {
		if got := forbidden(c.pkg, c.dep); got != c.want {
			t.Errorf("forbidden(%s, %s) = %v, want %v", c.pkg, c.dep, got, c.want)
		}
	}
}
