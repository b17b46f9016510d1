package prodtest

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"

	"github.com/edgesync/edgesync/internal/pgtest"
)

// soak is set by `make soak`: scenarios run at volume, the long ones too.
var soak = os.Getenv("EDGESYNC_SOAK") == "1"

// strict makes scenarios marked as failing because of a known defect fail
// the test like any other (for whoever fixes that defect).
var strict = os.Getenv("EDGESYNC_PRODTEST_STRICT") == "1"

func TestMain(m *testing.M) {
	flag.Parse()
	if runsScenarios() {
		// Build the binary and start Postgres side by side, before the
		// first scenario needs them.
		go buildOnce.Do(build)
		go pgOnce.Do(startPostgres)
	}
	code := m.Run()
	// Wait for a start still in flight (Once.Do returns after it), so
	// nothing is left behind.
	pgOnce.Do(func() {})
	buildOnce.Do(func() {})
	printReport(os.Stdout)
	if pgCluster != nil {
		pgCluster.Close()
	}
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	pgOnce    sync.Once
	pgCluster *pgtest.Cluster
	pgErr     error
)

// postgres is the cluster the scenarios share (each gets its own database);
// a scenario that stops Postgres starts its own with pgtest.StartCluster.
func postgres(t testing.TB) *pgtest.Cluster {
	t.Helper()
	pgOnce.Do(startPostgres)
	if pgErr != nil {
		t.Fatal(pgErr)
	}
	return pgCluster
}

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

func startPostgres() { pgCluster, pgErr = pgtest.Start() }

// runsScenarios reports whether -test.run selects a scenario (TestProd_*).
func runsScenarios() bool {
	f := flag.Lookup("test.run")
	if f == nil || f.Value.String() == "" {
		return true
	}
	re, err := regexp.Compile(f.Value.String())
	return err == nil && re.MatchString("TestProd_")
}

// binary builds cmd/edgesync once per test binary, as the image does
// (CGO_ENABLED=0, -trimpath), and returns its path.
func binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(build)
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func build() {
	binDir, buildErr = os.MkdirTemp("", "edgesync-prodtest-")
	if buildErr != nil {
		return
	}
	binPath = filepath.Join(binDir, "edgesync")
	cmd := exec.Command("go", "build", "-trimpath", "-o", binPath, "github.com/edgesync/edgesync/cmd/edgesync")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		buildErr = fmt.Errorf("go build ./cmd/edgesync: %v: %s", err, out)
	}
}
