package handlers

import (
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/labstack/echo/v4"
)

// ipExtractor believes X-Forwarded-For only from listed proxies; otherwise
// the TCP peer is the client, so a client cannot pick its own rate-limit key.
//
// It walks the header from the right: the rightmost entry that is not a
// trusted proxy is the client. Entries may carry a port ("1.2.3.4:5678",
// "[2001:db8::1]:443"), as some proxies write them; echo's own extractor
// does not parse those and falls back to the proxy's address, which would
// put every client behind that proxy into one bucket. An entry that is not
// an address at all makes the whole header untrustworthy: the peer is
// answered, as echo does.
func ipExtractor(trusted []*net.IPNet) echo.IPExtractor {
	direct := echo.ExtractIPDirect()
	if len(trusted) == 0 {
		return direct
	}
	isTrusted := func(a netip.Addr) bool {
		ip := net.IP(a.AsSlice())
		for _, n := range trusted {
			if n.Contains(ip) {
				return true
			}
		}
		return false
	}
	return func(req *http.Request) string {
		peer := direct(req)
		peerAddr, ok := forwardedAddr(peer)
		if !ok || !isTrusted(peerAddr) {
			return peer
		}
		xffs := req.Header.Values(echo.HeaderXForwardedFor)
		if len(xffs) == 0 {
			return peerAddr.String()
		}
		entries := strings.Split(strings.Join(xffs, ","), ",")
		var client netip.Addr
		for i := len(entries) - 1; i >= 0; i-- {
			a, ok := forwardedAddr(entries[i])
			if !ok {
				return peerAddr.String()
			}
			client = a
			if !isTrusted(a) {
				break
			}
		}
		// Every hop trusted: the leftmost is the farthest, the best guess.
		return client.String()
	}
}

// forwardedAddr parses one X-Forwarded-For entry: an address, a bracketed
// IPv6 address, or either with a port. IPv4-mapped IPv6 addresses become
// IPv4 and zones are dropped, so one client always has one spelling.
func forwardedAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil {
		ap, perr := netip.ParseAddrPort(s)
		if perr != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	return a.Unmap().WithZone(""), true
}
