package benchdata

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// ProcCPU reads utime+stime of a process from /proc/<pid>/stat (with
// children: also cutime+cstime, the CPU of its reaped children).
func ProcCPU(pid int, children bool) time.Duration {
	f := statFields(pid) // f[0] is field 3 (state)
	if len(f) < 15 {
		return 0
	}
	var ticks int64
	last := 12 // utime (14) and stime (15)
	if children {
		last = 14 // and cutime (16), cstime (17)
	}
	for j := 11; j <= last; j++ {
		n, _ := strconv.ParseInt(f[j], 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// ProcMemory returns VmHWM (peak resident set) and VmRSS of a process in KiB.
func ProcMemory(pid int) (hwm, rss int64) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(raw), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmHWM:":
			hwm = n
		case "VmRSS:":
			rss = n
		}
	}
	return hwm, rss
}

// GoTool is the go command of the toolchain running the benchmark.
func GoTool() string {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		return "go"
	}
	return goBin
}

// BuildEdgesync builds cmd/edgesync into dir as `make build` does and
// returns the binary's path: benchmarks run the real daemon as a process.
func BuildEdgesync(dir string) (string, error) {
	out := filepath.Join(dir, "edgesync")
	cmd := exec.Command(GoTool(), "build", "-trimpath", "-o", out, "github.com/edgesync/edgesync/cmd/edgesync")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if raw, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/edgesync: %w\n%s", err, raw)
	}
	return out, nil
}

// PostgresCPU is the CPU time of a whole Postgres cluster so far: the
// postmaster with its reaped children, plus every live child. The
// postmaster is the parent of any session (ParentPID of pg_backend_pid()).
func PostgresCPU(post int) time.Duration {
	if post <= 1 {
		return 0
	}
	total := ProcCPU(post, true)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == post {
			continue
		}
		if ParentPID(pid) == post {
			total += ProcCPU(pid, false)
		}
	}
	return total
}

// ParentPID is the parent of a process (0 when unknown).
func ParentPID(pid int) int {
	f := statFields(pid)
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// LogTail is the last 6,000 bytes of a daemon's log file, for a failure
// message.
func LogTail(path string) string {
	raw, _ := os.ReadFile(path)
	if len(raw) > 6000 {
		raw = raw[len(raw)-6000:]
	}
	return "daemon log (tail):\n" + string(raw)
}

// statFields are the fields of /proc/<pid>/stat after the command name (which
// may hold spaces and parentheses): f[0] is field 3, the state. Nil when the
// process is gone.
func statFields(pid int) []string {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}
