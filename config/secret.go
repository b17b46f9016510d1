package config

import (
	"io"
	"net/url"
	"regexp"
	"sort"
	"strings"
)

// redacted replaces every secret (or secret part of a value) in output.
const redacted = "REDACTED"

// redactSecret is the printable form of the secret setting key's value v:
// URLs and DSNs keep their shape (scheme, user, host, database) so a person
// can still check them, everything that authenticates is replaced.
func redactSecret(key, v string) string {
	if v == "" {
		return ""
	}
	switch key {
	case "database_url":
		return redactDatabaseURL(v)
	case "nats_url":
		return redactNATSURLs(v)
	}
	return redacted
}

var (
	// password=... in a key=value DSN, quoted ('it''s', 'a\'b') or not.
	dsnPassword = regexp.MustCompile(`(?i)(\b\w*password\s*=\s*)('(?:[^'\\]|\\.|'')*'?|[^\s]*)`)
	// ?password= or &sslpassword= in a URL query.
	queryPassword = regexp.MustCompile(`(?i)[?&][^=&]*password=`)
	// the next parameter after a query password: &key= of a known key.
	queryNext = regexp.MustCompile(`&(\w+)=`)
)

// redactDatabaseURL hides the password of a postgres:// URL (user info and
// query) or of a key=value DSN. A value of neither shape is hidden whole: it
// cannot be told which part authenticates.
func redactDatabaseURL(s string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		scheme, rest := s[:i+3], s[i+3:]
		// The last '@' ends the user info: a password may itself hold '@'
		// (or '/', '?') when a person did not escape it; over-masking is fine.
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			user, _, hasPw := strings.Cut(rest[:at], ":")
			if hasPw {
				user += ":" + redacted
			}
			rest = user + rest[at:]
		}
		return scheme + redactQuery(rest)
	}
	if isDSN(s) {
		return dsnPassword.ReplaceAllString(s, "${1}"+redacted)
	}
	return redacted
}

var dsnPair = regexp.MustCompile(`\s*(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']*)`)

// dsnKeys are the keywords of a libpq key=value DSN (and pgx's pool_*):
// a value with another key (a base64 token ends in '=') is no DSN.
var dsnKeys = map[string]bool{}

func init() {
	for _, k := range strings.Fields(`host hostaddr port dbname user password passfile require_auth channel_binding
		connect_timeout client_encoding options application_name fallback_application_name keepalives
		keepalives_idle keepalives_interval keepalives_count tcp_user_timeout replication gssencmode sslmode
		requiressl sslcompression sslcert sslkey sslpassword sslcertmode sslrootcert sslcrl sslcrldir sslsni
		sslnegotiation requirepeer ssl_min_protocol_version ssl_max_protocol_version min_protocol_version
		max_protocol_version krbsrvname gsslib gssdelegation service target_session_attrs load_balance_hosts
		statement_cache_capacity description_cache_capacity default_query_exec_mode servicefile`) {
		dsnKeys[k] = true
	}
}

// isDSN reports whether s is wholly a key=value DSN of known keys.
func isDSN(s string) bool {
	rest := strings.TrimSpace(s)
	if rest == "" {
		return false
	}
	for rest != "" {
		m := dsnPair.FindStringSubmatchIndex(rest)
		if m == nil || m[0] != 0 {
			return false
		}
		key := strings.ToLower(rest[m[2]:m[3]])
		if !dsnKeys[key] && !strings.HasPrefix(key, "pool_") {
			return false
		}
		rest = strings.TrimSpace(rest[m[1]:])
	}
	return true
}

// queryPasswords returns the spans of password values in a URL's query. A
// value runs to the next parameter of a known key, so an unescaped '&' in a
// password does not end it.
func queryPasswords(s string) [][2]int {
	var out [][2]int
	for _, m := range queryPassword.FindAllStringIndex(s, -1) {
		start, end := m[1], len(s)
		for _, n := range queryNext.FindAllStringSubmatchIndex(s[start:], -1) {
			key := strings.ToLower(s[start+n[2] : start+n[3]])
			if dsnKeys[key] || strings.HasPrefix(key, "pool_") {
				end = start + n[0]
				break
			}
		}
		if len(out) > 0 && start < out[len(out)-1][1] {
			continue // inside the previous value
		}
		out = append(out, [2]int{start, end})
	}
	return out
}

func redactQuery(s string) string {
	spans := queryPasswords(s)
	for i := len(spans) - 1; i >= 0; i-- {
		s = s[:spans[i][0]] + redacted + s[spans[i][1]:]
	}
	return s
}

// redactNATSURLs hides the user info of every URL of a comma-separated NATS
// server list, user name included: nats://TOKEN@host has no user, and a
// token may hold ':' itself.
func redactNATSURLs(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		scheme, rest := "", p
		if j := strings.Index(p, "://"); j >= 0 {
			scheme, rest = p[:j+3], p[j+3:]
		}
		at := strings.LastIndex(rest, "@")
		if at < 0 {
			continue
		}
		parts[i] = scheme + redacted + rest[at:]
	}
	return strings.Join(parts, ",")
}

// secretParts returns the secret pieces of the secret setting key's value v
// (a password, a token), raw and URL-decoded, for Scrub.
func secretParts(key, v string) []string {
	var out []string
	add := func(p string) {
		p = strings.TrimSpace(p)
		if p == "" {
			return
		}
		out = append(out, p)
		if d, err := url.QueryUnescape(p); err == nil && d != p {
			out = append(out, d)
		}
		if d, err := url.PathUnescape(p); err == nil && d != p {
			out = append(out, d)
		}
	}
	switch key {
	case "database_url":
		if i := strings.Index(v, "://"); i >= 0 {
			rest := v[i+3:]
			if at := strings.LastIndex(rest, "@"); at >= 0 {
				if _, pw, ok := strings.Cut(rest[:at], ":"); ok {
					add(pw)
				}
			}
			for _, sp := range queryPasswords(rest) {
				add(rest[sp[0]:sp[1]])
			}
		} else if isDSN(v) {
			for _, m := range dsnPassword.FindAllStringSubmatch(v, -1) {
				pw := m[2]
				add(pw)
				if strings.HasPrefix(pw, "'") {
					add(strings.Trim(pw, "'"))
				}
			}
		} else {
			add(v)
		}
	case "nats_url":
		for _, p := range strings.Split(v, ",") {
			if j := strings.Index(p, "://"); j >= 0 {
				p = p[j+3:]
			}
			if at := strings.LastIndex(p, "@"); at >= 0 {
				add(p[:at]) // user:password or a token
				if _, pw, ok := strings.Cut(p[:at], ":"); ok {
					add(pw)
				}
			}
		}
	default:
		add(v)
	}
	return out
}

// minScrub is the shortest secret piece Scrub replaces in free text: a
// shorter one would mangle ordinary words (and is no real secret).
const minScrub = 4

// Secrets lists the secret pieces of the configuration (passwords, tokens),
// longest first, for Scrub.
func (c Config) Secrets() []string {
	var out []string
	for _, f := range fields {
		if f.secret {
			for _, p := range secretParts(f.key, f.get(&c)) {
				if len(p) >= minScrub {
					out = append(out, p)
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// Scrub replaces every secret piece of the configuration in s: the last
// line of defence for text that did not come from Settings (errors of
// libraries, log lines).
func (c Config) Scrub(s string) string { return scrub(c.Secrets(), s) }

func scrub(secrets []string, s string) string {
	for _, p := range secrets {
		s = strings.ReplaceAll(s, p, redacted)
		// JSON-escaped form, as a log line or a JSON error carries it.
		if q := jsonEscape(p); q != p {
			s = strings.ReplaceAll(s, q, redacted)
		}
	}
	return s
}

func jsonEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`, "\r", `\r`)
	return r.Replace(s)
}

// ScrubWriter returns a writer that scrubs every write of the
// configuration's secrets before passing it on (for the log). A log
// encoder writes one entry per call, so a secret is never split.
func (c Config) ScrubWriter(w io.Writer) io.Writer {
	return scrubWriter{w: w, secrets: c.Secrets()}
}

type scrubWriter struct {
	w       io.Writer
	secrets []string
}

func (s scrubWriter) Write(p []byte) (int, error) {
	if len(s.secrets) == 0 {
		return s.w.Write(p)
	}
	if _, err := io.WriteString(s.w, scrub(s.secrets, string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
