package handlers

import (
	"net"
	"net/http/httptest"
	"testing"
)

// TestForwardedForWithPorts: proxies that append the client's source port
// to X-Forwarded-For must not make every client fall back to the proxy's
// address (and so share one rate-limit bucket).
func TestForwardedForWithPorts(t *testing.T) {
	_, proxies, _ := net.ParseCIDR("10.0.0.0/8")
	extract := ipExtractor([]*net.IPNet{proxies})
	tests := []struct {
		name   string
		peer   string
		xff    []string
		expect string
	}{
		{"no header", "10.0.0.1:1000", nil, "10.0.0.1"},
		{"plain v4", "10.0.0.1:1000", []string{"203.0.113.7"}, "203.0.113.7"},
		{"v4 with port", "10.0.0.1:1000", []string{"203.0.113.7:5678"}, "203.0.113.7"},
		{"v6 bracketed with port", "10.0.0.1:1000", []string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{"v6 bracketed without port", "10.0.0.1:1000", []string{"[2001:db8::1]"}, "2001:db8::1"},
		{"plain v6", "10.0.0.1:1000", []string{"2001:db8::2"}, "2001:db8::2"},
		{"v4-mapped v6", "10.0.0.1:1000", []string{"[::ffff:203.0.113.9]:80"}, "203.0.113.9"},
		{"spaces around", "10.0.0.1:1000", []string{" 203.0.113.7:5678 "}, "203.0.113.7"},
		{"chain: rightmost untrusted wins", "10.0.0.1:1000", []string{"198.51.100.1:1, 203.0.113.7:2, 10.0.0.2:3"}, "203.0.113.7"},
		{"chain over two headers", "10.0.0.1:1000", []string{"198.51.100.1:1", "203.0.113.7:2"}, "203.0.113.7"},
		{"all trusted: leftmost", "10.0.0.1:1000", []string{"10.1.1.1:9, 10.0.0.2"}, "10.1.1.1"},
		{"garbage: the peer", "10.0.0.1:1000", []string{"not-an-ip:80"}, "10.0.0.1"},
		{"untrusted peer: header ignored", "192.0.2.1:1000", []string{"203.0.113.7:5678"}, "192.0.2.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/", nil)
			req.RemoteAddr = tc.peer
			for _, v := range tc.xff {
				req.Header.Add("X-Forwarded-For", v)
			}
			if got := extract(req); got != tc.expect {
				t.Errorf("client IP %q, want %q", got, tc.expect)
			}
		})
	}
}
