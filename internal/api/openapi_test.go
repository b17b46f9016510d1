package api

import (
	"os"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestRoutes_MatchOpenAPI keeps docs/openapi.yaml and the route table in step:
// every route is documented, every documented operation exists, each has the
// route table's operationId and a security statement ([] for public ones),
// and the write routes are exactly the ones that declare the bearer token.
func TestRoutes_MatchOpenAPI(t *testing.T) {
	raw, err := os.ReadFile("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string `yaml:"openapi"`
		Paths   map[string]map[string]struct {
			OperationID string `yaml:"operationId"`
			Security    *[]any `yaml:"security"`
		} `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	documented := map[string]bool{}
	opIDs := map[string]string{}
	seen := map[string]bool{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			k := strings.ToUpper(method) + " " + path
			if op.Security == nil {
				t.Errorf("%s has no security statement (security: [] for a public operation)", k)
				continue
			}
			if op.OperationID == "" || seen[op.OperationID] {
				t.Errorf("%s: operationId %q is missing or not unique", k, op.OperationID)
			}
			seen[op.OperationID] = true
			documented[k] = len(*op.Security) > 0
			opIDs[k] = op.OperationID
		}
	}
	served := map[string]bool{}
	for _, r := range routeTable() {
		k := r.method + " " + openAPIPath(r.path)
		served[k] = r.token
		if id, ok := opIDs[k]; ok && id != r.op {
			t.Errorf("%s: operationId %q in docs/openapi.yaml, %q in the route table", k, id, r.op)
		}
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
