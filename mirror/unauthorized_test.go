package mirror

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/edgesync/edgesync/icp"
)

// TestUnauthorized: the canister's Unauthorized variant is icp.ErrUnauthorized, and a mirror job
// that meets it retries with a note that tells the operator what to do.
func TestUnauthorized(t *testing.T) {
	caller := "mqw2j-hoaai"
	err := (&icp.ErrorVariant{Unauthorized: &caller}).Err()
	if !errors.Is(err, icp.ErrUnauthorized) || !strings.Contains(err.Error(), caller) {
		t.Fatalf("Err() = %v; want ErrUnauthorized naming %s", err, caller)
	}
	p := explain(fmt.Errorf("put_metadata: %w", err), Config{})
	if p.permanent || !strings.Contains(p.note, "authorize") {
		t.Fatalf("explain = %+v; want a retried problem whose note says to authorize", p)
	}
}
