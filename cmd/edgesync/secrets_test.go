package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/internal/natstest"
	"github.com/edgesync/edgesync/internal/pgtest"
)

// TestCLI_SecretsNeverPrinted runs every command that prints configuration
// or errors with secret-shaped settings (a base64 admin token ending in '=',
// a DB password, a NATS token URL next to a NATS URL with a password) and
// fails if any 6-character piece of a secret appears on stdout or stderr.
func TestCLI_SecretsNeverPrinted(t *testing.T) {
	const (
		dbPass    = "Db+Pw/9xQ=="
		natsPass  = "NatsPw7788secret"
		natsToken = "tOkEn4455abc"
		admin     = "YWRtaW4tdG9rZW4tc2VjcmV0LXZhbHVl="
	)
	secrets := []string{dbPass, natsPass, natsToken, admin}
	ns := natstest.StartUsers(t, &server.User{Username: "edgesync", Password: natsPass})
	// An operator's stream that captures the admin subject: `run` stops with one line.
	nc, err := nats.Connect(ns.URL(), nats.UserInfo("edgesync", natsPass))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EDGESYNC", Subjects: []string{"edgesync.>"}, Storage: jetstream.FileStorage, Duplicates: 5 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	// The test cluster trusts every password, so the DB URL may carry one.
	dbURL := strings.Replace(pgtest.New(t), "postgres://postgres@", "postgres://postgres:"+strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(dbPass)+"@", 1)
	hostport := strings.TrimPrefix(ns.URL(), "nats://")
	env := map[string]string{
		"EDGESYNC_DATABASE_URL": dbURL,
		"EDGESYNC_NATS_URL":     "nats://edgesync:" + natsPass + "@" + hostport + ",nats://" + natsToken + "@" + closedAddr(t),
		"EDGESYNC_ADMIN_TOKEN":  admin,
		"EDGESYNC_HTTP_ADDR":    "127.0.0.1:0",
		"EDGESYNC_DATA_DIR":     t.TempDir(),
		"EDGESYNC_LOG_LEVEL":    "debug",
	}
	bad := map[string]string{}
	for k, v := range env {
		bad[k] = v
	}
	bad["EDGESYNC_RECONCILE_INTERVAL"] = "ten minutes" // a config error line
	dsn := map[string]string{"EDGESYNC_DATABASE_URL": "host=127.0.0.1 port=1 user=u password=" + dbPass + " dbname=x"}

	runs := []struct {
		env  map[string]string
		args []string
	}{
		{env, []string{"status", "--json"}},
		{env, []string{"status"}},
		{env, []string{"doctor", "--json"}},
		{env, []string{"doctor"}},
		{env, []string{"run"}},
		{bad, []string{"status"}},
		{dsn, []string{"migrate", "status"}},
		{dsn, []string{"doctor"}},
	}
	for _, r := range runs {
		rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
		_, out, errOut := runCLIContext(rctx, r.env, r.args...)
		rcancel()
		all := out + errOut
		if all == "" {
			t.Errorf("%v printed nothing", r.args)
		}
		for _, s := range secrets {
			for i := 0; i+6 <= len(s); i++ {
				if strings.Contains(all, s[i:i+6]) {
					t.Fatalf("%v prints %q of a secret:\n%s", r.args, s[i:i+6], all)
				}
			}
		}
	}
}
