package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// outsideRefs are references to files that are not in the repository: a reader of the docs never
// sees them.
var outsideRefs = regexp.MustCompile(`CONTRACT|DESIGN\b|DESIGN\.md|STYLE\.md|\.\./shared|/work/|/home/|/Users/`)

// mdLink is a relative Markdown link target (no scheme, no pure anchor).
var mdLink = regexp.MustCompile(`\]\(([^)#:\s]+)(#[^)]*)?\)`)

// TestDocs_SelfContained: README and docs/ refer to nothing outside the repository, and every
// relative link points at a file that exists.
func TestDocs_SelfContained(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(root, "docs", "*"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join(root, "README.md"))
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for i, line := range strings.Split(string(b), "\n") {
			if m := outsideRefs.FindString(line); m != "" {
				t.Errorf("%s:%d refers to %q, which is not in the repository: %s", f, i+1, m, strings.TrimSpace(line))
			}
			if !strings.HasSuffix(f, ".md") {
				continue
			}
			for _, l := range mdLink.FindAllStringSubmatch(line, -1) {
				target := filepath.Join(filepath.Dir(f), l[1])
				if _, err := os.Stat(target); err != nil {
					t.Errorf("%s:%d links to %s, which does not exist", f, i+1, l[1])
				}
			}
		}
	}
	if checked < 10 {
		t.Fatalf("only %d files checked", checked)
	}
}
