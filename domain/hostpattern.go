package domain

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// DefaultAssetHosts is the default of EDGESYNC_ASSET_HOSTS: Vercel Blob's public hosts.
const DefaultAssetHosts = "*.public.blob.vercel-storage.com"

// MaxAssetBytes is the largest asset the memory-store canister stores (64 MiB, its documented
// limit: canister/src/Store.mo, docs/icp.md): the default and the ceiling of
// EDGESYNC_ASSET_MAX_BYTES. A larger asset could be downloaded but never committed.
const MaxAssetBytes = 64 << 20

// HostPattern is one entry of the asset host allow-list (EDGESYNC_ASSET_HOSTS): `host`,
// `host:port`, `*.suffix` or `*.suffix:port`. A host may be an IP literal (`127.0.0.1:8080`,
// `[::1]:8080`); only such a pattern lets the mirror reach a loopback, private or link-local
// address, because it names that address on purpose.
type HostPattern struct {
	// Host is the lowercase host, or for a wildcard the suffix after "*.".
	Host string
	// Port is the required port; empty allows any port.
	Port string
	// Wildcard matches any host ending in "."+Host (not Host itself).
	Wildcard bool
}

// ParseHostPatterns parses a comma-separated allow-list. Blank entries are ignored; an entry
// that is not a host pattern is an error that quotes it.
func ParseHostPatterns(s string) ([]HostPattern, error) {
	var out []HostPattern
	for _, raw := range strings.Split(s, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		p, err := parseHostPattern(raw)
		if err != nil {
			return nil, fmt.Errorf("%q: %w (want host, host:port or *.suffix)", raw, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func parseHostPattern(raw string) (HostPattern, error) {
	s := strings.ToLower(raw)
	var p HostPattern
	host := s
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") == 1 {
		h, port, err := net.SplitHostPort(s)
		if err != nil {
			return p, err
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return p, fmt.Errorf("port %q is not 1-65535", port)
		}
		host, p.Port = h, strconv.Itoa(n)
	}
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		p.Wildcard, host = true, rest
	}
	switch {
	case host == "":
		return p, fmt.Errorf("no host")
	case net.ParseIP(host) != nil:
		if p.Wildcard {
			return p, fmt.Errorf("a wildcard needs a host name, not an address")
		}
	case !validHostname(host):
		return p, fmt.Errorf("%q is not a host name", host)
	}
	p.Host = host
	return p, nil
}

// validHostname accepts dot-separated labels of letters, digits and inner hyphens.
func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Match reports whether host (any case) and port (the effective port, never empty) are allowed.
func (p HostPattern) Match(host, port string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if p.Port != "" && p.Port != port {
		return false
	}
	if p.Wildcard {
		return strings.HasSuffix(host, "."+p.Host)
	}
	if ip := net.ParseIP(host); ip != nil {
		pip := net.ParseIP(p.Host)
		return pip != nil && pip.Equal(ip)
	}
	return host == p.Host
}

// IP is the address the pattern names explicitly, or nil for a host name pattern.
func (p HostPattern) IP() net.IP {
	if p.Wildcard {
		return nil
	}
	return net.ParseIP(p.Host)
}

func (p HostPattern) String() string {
	h := p.Host
	if p.Wildcard {
		h = "*." + h
	}
	if p.Port == "" {
		return h
	}
	return net.JoinHostPort(h, p.Port)
}
