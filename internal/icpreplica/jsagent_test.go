package icpreplica

import (
	"crypto/ed25519"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/edgesync/edgesync/internal/nodetools"
)

// TestReplica_jsAgent runs the official JavaScript agent (@dfinity/agent, pinned in tools/node)
// against the double with the agent's default verification on, in both reply modes of calls
// (a certificate in the 200 reply, and 202 then read_state polling), and with a forged key.
func TestReplica_jsAgent(t *testing.T) {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i + 1)
	}
	// The script's identity is the replica's controller, so it can authorize itself.
	me := principal.NewSelfAuthenticating(ed25519DER(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)))
	r := StartTest(t, Config{Controllers: []principal.Principal{me}})

	run := func(t *testing.T, mode string) {
		t.Helper()
		out, err := nodetools.Node(t, 3*time.Minute, "jsagent-check.js", r.URL(), r.CanisterID().String(), hex.EncodeToString(seed), mode)
		t.Log("\n" + out)
		if err != nil {
			t.Fatalf("jsagent-check.js %s: %v", mode, err)
		}
		if !strings.Contains(out, " passed, 0 failed") || strings.Contains(out, "FAIL") {
			t.Fatal("the JavaScript agent checks did not pass cleanly")
		}
	}
	t.Run("certified replies", func(t *testing.T) { run(t, "honest") })
	t.Run("202 and read_state polling", func(t *testing.T) {
		r.SetAsync(true)
		defer r.SetAsync(false)
		before := r.Stats().Calls["put_metadata"]
		run(t, "honest")
		if r.Stats().Calls["put_metadata"] <= before {
			t.Fatal("no put_metadata reached the double")
		}
	})
	t.Run("foreign key refused", func(t *testing.T) {
		r.SetForeignKey(true)
		defer r.SetForeignKey(false)
		run(t, "foreign")
	})
}
