package config

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/configuration.md from the config code")

// TestReference_Doc keeps docs/configuration.md equal to what the config code
// says; `go test ./config -run TestReference_Doc -update` regenerates it.
func TestReference_Doc(t *testing.T) {
	path := filepath.Join("..", "docs", "configuration.md")
	want := ReferenceMarkdown()
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (generate it: go test ./config -run TestReference_Doc -update)", err)
	}
	if string(got) != want {
		t.Fatal("docs/configuration.md differs from the config code; regenerate it: go test ./config -run TestReference_Doc -update")
	}
}

// TestReference_EverySettingDocumented: a setting without a meaning or a
// release, or a description of a setting that does not exist, fails.
func TestReference_EverySettingDocumented(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range Reference() {
		seen[s.Key] = true
		if s.Meaning == "" || s.Since == "" {
			t.Errorf("%s has no meaning or release in abouts", s.Env)
		}
	}
	for k := range abouts {
		if !seen[k] {
			t.Errorf("abouts describes %q, which is no setting", k)
		}
	}
}
