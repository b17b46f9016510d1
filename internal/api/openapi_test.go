package api

import (
	"os"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestRoutes_MatchOpenAPI keeps docs/openapi.yaml and the route table in step:
// every route is documented, every documented operation exists, and the
// write routes are exactly the ones that declare the bearer token.
func TestRoutes_MatchOpenAPI(t *testing.T) {
	raw, err := os.ReadFile("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                                         `yaml:"openapi"`
		Paths   map[string]map[string]struct{ Security []any } `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			documented[strings.ToUpper(method)+" "+path] = len(op.Security) > 0
		}
	}
	served := map[string]bool{}
	for _, r := range routeTable() {
		served[r.method+" "+r.path] = r.token
	}
	var missing, extra, auth []string
	for k, write := range served {
		docWrite, ok := documented[k]
		if !ok {
			missing = append(missing, k)
		} else if docWrite != write {
			auth = append(auth, k)
		}
	}
	for k := range documented {
		if _, ok := served[k]; !ok {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	sort.Strings(auth)
	if len(missing)+len(extra)+len(auth) > 0 {
		t.Fatalf("undocumented routes %v; documented but not served %v; security differs %v", missing, extra, auth)
	}
}
