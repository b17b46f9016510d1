package icpreplica

import "testing"

// StartTest starts a replica on a free 127.0.0.1 port for the test and stops it at cleanup.
func StartTest(tb testing.TB, cfg Config) *Replica {
	tb.Helper()
	r, err := Start(cfg)
	if err != nil {
		tb.Fatalf("start icp replica double: %v", err)
	}
	tb.Cleanup(func() {
		if err := r.Stop(); err != nil {
			tb.Errorf("stop icp replica double: %v", err)
		}
	})
	return r
}
