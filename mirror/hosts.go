package mirror

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/edgesync/edgesync/domain"
)

// maxRedirects bounds the redirects of one download.
const maxRedirects = 5

// HostError says an asset URL (or a redirect) names a host the allow-list does not permit, or
// a permitted host name that resolves to an address the mirror refuses.
type HostError struct {
	Host     string // host[:port] as in the URL
	Addr     net.IP // the refused address; nil when the host itself is not allowed
	Redirect bool   // reached through a redirect
}

func (e *HostError) Error() string {
	via := ""
	if e.Redirect {
		via = " (redirect)"
	}
	if e.Addr != nil {
		return fmt.Sprintf("asset host %s%s resolves to %s, a %s address", e.Host, via, e.Addr, addrKind(e.Addr))
	}
	return fmt.Sprintf("asset host %s%s is not in EDGESYNC_ASSET_HOSTS", e.Host, via)
}

// hostPolicy decides which hosts and addresses the fetcher may reach.
type hostPolicy struct {
	patterns []domain.HostPattern
}

// match returns the first pattern that allows host and port.
func (p *hostPolicy) match(host, port string) (domain.HostPattern, bool) {
	for _, pat := range p.patterns {
		if pat.Match(host, port) {
			return pat, true
		}
	}
	return domain.HostPattern{}, false
}

// allowedURL checks a URL's host and effective port against the allow-list.
func (p *hostPolicy) allowedURL(u *url.URL, redirect bool) error {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	if _, ok := p.match(u.Hostname(), port); !ok {
		return &HostError{Host: u.Host, Redirect: redirect}
	}
	return nil
}

// restricted reports whether ip is an address only an explicit pattern may reach: loopback,
// private, link-local (the cloud metadata service lives there), unspecified, multicast.
func restricted(ip net.IP) bool {
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified()
}

func addrKind(ip net.IP) string {
	switch {
	case ip.IsLoopback():
		return "loopback"
	case ip.IsPrivate():
		return "private"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return "link-local"
	case ip.IsUnspecified():
		return "unspecified"
	default:
		return "multicast"
	}
}

// dial connects to addr only if the allow-list permits its host, and checks the address actually
// dialled (after DNS, so a name that later resolves elsewhere cannot slip through): a restricted
// address only when the matching pattern names exactly that address.
func (p *hostPolicy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	pat, ok := p.match(host, port)
	if !ok {
		return nil, &HostError{Host: addr}
	}
	explicit := pat.IP()
	d := &net.Dialer{
		Timeout:   30 * time.Second,
		KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			h, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			ip := net.ParseIP(h)
			if ip == nil {
				return fmt.Errorf("dial %s: not an IP address", address)
			}
			if restricted(ip) && !(explicit != nil && explicit.Equal(ip)) {
				return &HostError{Host: addr, Addr: ip}
			}
			return nil
		},
	}
	return d.DialContext(ctx, network, addr)
}

// httpClient is the fetcher's client: no proxy from the environment (it would dial the proxy,
// not the host the policy checked), the policy's dialer, and redirects only to allowed hosts.
func (p *hostPolicy) httpClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.DialContext = p.dial
	return &http.Client{
		Transport: t,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("stopped after %d redirects", maxRedirects)
			}
			return p.allowedURL(req.URL, true)
		},
	}
}

// hostError finds a HostError in err.
func hostError(err error) (*HostError, bool) {
	var he *HostError
	ok := errors.As(err, &he)
	return he, ok
}
