// Package testwait polls a condition in tests until it holds or a deadline
// passes, and fails the test with the condition's last word if it never
// does. It imports nothing of the project.
package testwait

import (
	"testing"
	"time"
)

// Eventually polls cond every 20 ms for up to within; cond returns whether
// it holds and, if not, what it saw (quoted in the failure).
func Eventually(t testing.TB, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	Poll(t, within, 20*time.Millisecond, what, cond)
}

// Poll is Eventually with its own polling interval, for conditions that are
// expensive to check.
func Poll(t testing.TB, within, every time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(every)
	}
	t.Fatalf("timed out after %s waiting for %s: %s", within, what, last)
}
