package main

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/internal/wxtest"
)

// TestMaxConnsThroughServe: WXTOKEN_MAX_CONNS reaches the server: with a
// cap of 3, a fourth keep-alive connection is served and one of the three
// idle ones is closed.
func TestMaxConnsThroughServe(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	s := startServer(t, f.env.with("WXTOKEN_MAX_CONNS", "3"))
	addr := strings.TrimPrefix(s.URL, "http://")
	var conns []net.Conn
	for i := range 3 {
		conn, resp := wxtest.KeepAlive(t, addr, "/healthz")
		if resp == nil || resp.StatusCode != 200 {
			t.Fatalf("connection %d was not served", i)
		}
		conns = append(conns, conn)
	}
	// The fourth is served once the server has seen one of the three go
	// idle (it marks them idle just after answering); until then a
	// newcomer has nothing to shed and is closed.
	eventually(t, 10*time.Second, "a fourth connection to be served", func() bool {
		_, resp := wxtest.KeepAlive(t, addr, "/healthz")
		return resp != nil && resp.StatusCode == 200
	})
	// One of the three idle ones made room. (Which one is the unit test's
	// business: here the server marks a connection idle just after the
	// client has its answer, so under load the three may turn idle in any
	// order.)
	eventually(t, 10*time.Second, "an idle connection to be shed", func() bool {
		for _, c := range conns {
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); err != nil {
				if ne := net.Error(nil); !errors.As(err, &ne) || !ne.Timeout() {
					return true
				}
			}
		}
		return false
	})

	bad := loadConfig(env{"WXTOKEN_MAX_CONNS": "0"}.getenv)
	if err := bad.validate(); err == nil || !strings.Contains(err.Error(), "WXTOKEN_MAX_CONNS") {
		t.Errorf("WXTOKEN_MAX_CONNS=0 accepted: %v", err)
	}
}
