package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/internal/api"
)

// TestScrubChecks: a backend check whose error quotes a secret setting (as a
// driver may) reaches /api/health/backends without it.
func TestScrubChecks(t *testing.T) {
	cfg, err := config.Load("", func(k string) (string, bool) {
		v, ok := map[string]string{
			"EDGESYNC_NATS_URL":     "nats://tok3nValue99@n1:4222",
			"EDGESYNC_DATABASE_URL": "postgres://app:pw9988776@db/app",
		}[k]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	checks := scrubChecks(cfg, []api.BackendCheck{{Name: "nats", Check: func(context.Context) error {
		return errors.New("dial nats://tok3nValue99@n1:4222 and postgres://app:pw9988776@db/app failed")
	}}, {Name: "ok", Check: func(context.Context) error { return nil }}})
	got := checks[0].Check(context.Background())
	if got == nil || strings.Contains(got.Error(), "tok3nValue99") || strings.Contains(got.Error(), "pw9988776") || !strings.Contains(got.Error(), "REDACTED") {
		t.Fatalf("error %v", got)
	}
	if checks[1].Check(context.Background()) != nil || checks[0].Name != "nats" {
		t.Fatal("scrubChecks changed a passing check or a name")
	}
}
