package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// keepAlive opens a connection to addr, makes one request on it and reads
// the answer, leaving the connection open and idle.
func keepAlive(t *testing.T, addr, path string) (net.Conn, *http.Response) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: wxtoken.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return conn, nil
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return conn, resp
}

// TestMaxConnsThroughServe: WXTOKEN_MAX_CONNS reaches the server: with a
// cap of 3, a fourth keep-alive connection is served and one of the three
// idle ones is closed.
func TestMaxConnsThroughServe(t *testing.T) {
	f := newFixture(t, testAppID)
	s := startServer(t, f.env.with("WXTOKEN_MAX_CONNS", "3"))
	addr := strings.TrimPrefix(s.URL, "http://")
	var conns []net.Conn
	for i := range 3 {
		conn, resp := keepAlive(t, addr, "/healthz")
		if resp == nil || resp.StatusCode != 200 {
			t.Fatalf("connection %d was not served", i)
		}
		conns = append(conns, conn)
	}
	// The fourth is served once the server has seen one of the three go
	// idle (it marks them idle just after answering); until then a
	// newcomer has nothing to shed and is closed.
	eventually(t, 10*time.Second, "a fourth connection to be served", func() bool {
		_, resp := keepAlive(t, addr, "/healthz")
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
