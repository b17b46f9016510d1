package config

import (
	"fmt"
	"strings"
	"testing"
)

// secretShapes places a secret wherever a setting can hold one, in every
// shape the issue lists: a base64 token ending in '=', a NATS token URL,
// several NATS URLs each with a password, DB URL passwords in user info and
// query, and key=value DSN passwords (plain and quoted).
func secretShapes(secret string) []map[string]string {
	return []map[string]string{
		{"EDGESYNC_ADMIN_TOKEN": secret},
		{"EDGESYNC_ADMIN_TOKEN": secret + "=="},
		{"EDGESYNC_NATS_URL": "nats://" + secret + "@nats:4222"},
		{"EDGESYNC_NATS_URL": "nats://u1:" + secret + "@n1:4222,nats://u2:" + secret + "x@n2:4222, nats://u3:" + secret + "y@n3:4222"},
		{"EDGESYNC_NATS_URL": "tls://" + secret + "@nats:4222,nats://" + secret + "z@nats2:4222"},
		{"EDGESYNC_DATABASE_URL": "postgres://app:" + secret + "@db:5432/app?sslmode=require"},
		{"EDGESYNC_DATABASE_URL": "postgresql://app@db/app?sslmode=require&password=" + secret},
		{"EDGESYNC_DATABASE_URL": "host=db user=app password=" + secret + " dbname=app"},
		{"EDGESYNC_DATABASE_URL": "host=db user=app password='" + secret + " with space' dbname=app"},
		{"EDGESYNC_DATABASE_URL": "host=db sslpassword=" + secret + " password = " + secret + "q"},
		{"EDGESYNC_DATABASE_URL": secret}, // neither shape: hidden whole
	}
}

// outputs is every way a configuration reaches a person: the settings
// (status output), String, GoString, the fmt verbs, Validate's errors and
// Scrub over a text that embeds the raw values (a library's error, a log).
func outputs(c Config, raw map[string]string) string {
	var b strings.Builder
	for _, s := range c.Settings() {
		b.WriteString(s.Env + "=" + s.Value + "\n")
	}
	fmt.Fprintf(&b, "%s\n%v\n%+v\n%#v\n", c.String(), c, c, c)
	if err := c.Validate(); err != nil {
		b.WriteString(err.Error() + "\n")
	}
	var text strings.Builder
	for k, v := range raw {
		fmt.Fprintf(&text, "connect %s: %q failed (%s)\n", k, v, v)
	}
	b.WriteString(c.Scrub(text.String()))
	var w strings.Builder
	fmt.Fprint(c.ScrubWriter(&w), text.String())
	b.WriteString(w.String())
	return b.String()
}

// leaks returns a substring of secret of 6+ characters that appears in out
// but not in base (the same output for a harmless secret), if any.
func leaks(secret, out, base string) string {
	for n := 6; n <= len(secret); n++ {
		for i := 0; i+n <= len(secret); i++ {
			sub := secret[i : i+n]
			if strings.Contains(out, sub) && !strings.Contains(base, sub) {
				return sub
			}
		}
	}
	return ""
}

func checkNoLeak(t *testing.T, secret string) {
	t.Helper()
	for _, shape := range secretShapes(secret) {
		c, err := Load("", envMap(shape))
		if err != nil {
			t.Fatal(err)
		}
		base := map[string]string{}
		for k, v := range shape {
			base[k] = strings.ReplaceAll(v, secret, "p")
		}
		cb, _ := Load("", envMap(base))
		out := outputs(c, shape)
		if sub := leaks(secret, out, outputs(cb, base)); sub != "" {
			t.Fatalf("secret %q in %v leaks %q:\n%s", secret, shape, sub, out)
		}
	}
}

func TestConfig_RedactsEverySecretShape(t *testing.T) {
	for _, secret := range []string{
		"dG9rZW4tdmVyeS1zZWNyZXQ=", // base64 ending in '='
		"s3cret-pw",
		"p@ss/w:rd?x=1",
		"hunter2hunter2",
		"AbC+/=9xYz",
	} {
		checkNoLeak(t, secret)
	}
	// The shapes stay readable.
	c, _ := Load("", envMap(map[string]string{
		"EDGESYNC_NATS_URL":     "nats://u1:pw1234@n1:4222,nats://tok123456@n2:4222",
		"EDGESYNC_DATABASE_URL": "host=db user=app password=hunter2 dbname=app",
	}))
	got := c.String()
	for _, want := range []string{"nats://REDACTED@n1:4222,nats://REDACTED@n2:4222", "host=db user=app password=REDACTED dbname=app"} {
		if !strings.Contains(got, want) {
			t.Errorf("redacted output lacks %q:\n%s", want, got)
		}
	}
}

// FuzzConfig_Redaction feeds secret-shaped values through every output path
// of the configuration and fails if any 6+ character piece of a secret shows.
func FuzzConfig_Redaction(f *testing.F) {
	for _, s := range []string{"dG9rZW4tdmVyeS1zZWNyZXQ=", "s3cret-pw", "p@ss/w:rd", "a'b\\c d", "x,y,z:123456"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, secret string) {
		// Secrets are printable and have no whitespace at the ends (a
		// DSN or URL could not carry them otherwise); shorter ones are not
		// checked (see leaks).
		if len(secret) < 6 || len(secret) > 64 || strings.TrimSpace(secret) != secret {
			return
		}
		for _, r := range secret {
			if r < '!' || r > '~' || r == '\'' || r == '\\' || r == ',' {
				return
			}
		}
		checkNoLeak(t, secret)
	})
}

func TestConfig_CheckEmbeddedNATS(t *testing.T) {
	cases := []struct {
		env     map[string]string
		refused bool
	}{
		{map[string]string{}, false},                                     // development default
		{map[string]string{"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, true}, // a pod without a NATS URL
		{map[string]string{"KUBERNETES_SERVICE_HOST": "10.0.0.1", "EDGESYNC_NATS_EMBEDDED": "true"}, false},
		{map[string]string{"KUBERNETES_SERVICE_HOST": "10.0.0.1", "EDGESYNC_NATS_URL": "nats://n:4222"}, false},
	}
	for _, tc := range cases {
		c, _ := Load("", envMap(tc.env))
		err := c.CheckEmbeddedNATS()
		if (err != nil) != tc.refused {
			t.Errorf("%v: err %v, want refused=%v", tc.env, err, tc.refused)
		}
		if err != nil && (strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "EDGESYNC_NATS_EMBEDDED=true")) {
			t.Errorf("refusal is not one line naming the fix: %q", err)
		}
	}
}
