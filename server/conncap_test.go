package server

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/internal/syncbuf"
	"github.com/wxtoken/wxtoken/internal/wxtest"
)

// closedByServer waits for the server to close conn (EOF or reset) and
// fails the test if it has not after 10 s.
func closedByServer(t *testing.T, conn net.Conn) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := conn.Read(make([]byte, 1))
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection from %s still open", conn.LocalAddr())
	}
}

// TestConnCapShedsTheLongestIdle runs a real server with the cap on
// loopback: cap+N idle keep-alive connections leave at most cap open, the
// N closed are the longest idle, every newcomer is served, and when no
// connection is idle a newcomer is closed instead.
func TestConnCapShedsTheLongestIdle(t *testing.T) {
	const max, extra = 8, 4
	logs := new(syncbuf.Buffer)
	cc := newConnCap(max, slog.New(slog.NewJSONHandler(logs, nil)))
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/hold", func(w http.ResponseWriter, r *http.Request) { <-release; io.WriteString(w, "ok") })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ConnState: cc.track, IdleTimeout: time.Minute}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()

	idleOnServer := func(c net.Conn) bool {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		for e := cc.idle.Front(); e != nil; e = e.Next() {
			if e.Value.(net.Conn).RemoteAddr().String() == c.LocalAddr().String() {
				return true
			}
		}
		return false
	}
	var conns []net.Conn
	for i := range max + extra {
		conn, resp := wxtest.KeepAlive(t, addr, "/")
		if resp == nil || resp.StatusCode != 200 {
			t.Fatalf("connection %d was not served", i)
		}
		// Wait until the server sees it idle, so "longest idle" is the
		// order the connections were opened in.
		wxtest.Eventually(t, 10*time.Second, "the connection to go idle", func() bool { return idleOnServer(conn) })
		if n := cc.open(); n > max {
			t.Fatalf("%d connections open, over the cap of %d", n, max)
		}
		conns = append(conns, conn)
	}
	for i, conn := range conns[:extra] {
		closedByServer(t, conn)
		if idleOnServer(conn) {
			t.Errorf("connection %d, among the longest idle, is still tracked", i)
		}
	}
	for i, conn := range conns[extra:] {
		if !idleOnServer(conn) {
			t.Errorf("connection %d, among the newest, was closed", extra+i)
		}
	}
	if n := cc.open(); n != max {
		t.Errorf("%d open after the flood, want the cap %d", n, max)
	}

	// Every connection busy: a newcomer has nothing to shed and is closed.
	for i, conn := range conns[extra:] {
		if _, err := io.WriteString(conn, "GET /hold HTTP/1.1\r\nHost: wxtoken.test\r\n\r\n"); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	wxtest.Eventually(t, 10*time.Second, "every connection to be busy", func() bool {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		return cc.idle.Len() == 0
	})
	late, resp := wxtest.KeepAlive(t, addr, "/")
	if resp != nil {
		t.Fatalf("a connection over the cap with none idle was served: %d", resp.StatusCode)
	}
	closedByServer(t, late)
	close(release)
	if n := cc.open(); n > max {
		t.Errorf("%d open, over the cap of %d", n, max)
	}
	if !strings.Contains(logs.String(), "connection cap reached") {
		t.Errorf("no warning logged:\n%s", logs.String())
	}
}

// TestConnCapShedsSilentConnections: connections that never send a request
// (a slowloris filling the cap) do not lock newcomers out: once one has been
// silent for silentGrace, a newcomer at the cap takes its place, oldest
// first; before that, the newcomer is the one closed.
func TestConnCapShedsSilentConnections(t *testing.T) {
	const max = 3
	cc := newConnCap(max, slog.New(slog.DiscardHandler))
	var mu sync.Mutex
	now := time.Unix(1_000_000, 0)
	cc.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ConnState: cc.track, ReadHeaderTimeout: time.Minute}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()

	var silent []net.Conn
	for range max {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		silent = append(silent, conn)
	}
	wxtest.Eventually(t, 10*time.Second, "the silent connections to be tracked", func() bool { return cc.open() == max })

	// Silent for less than silentGrace: the newcomer is refused.
	if _, resp := wxtest.KeepAlive(t, addr, "/"); resp != nil {
		t.Fatalf("a newcomer was served at the cap while the silent ones were fresh: %d", resp.StatusCode)
	}
	advance(silentGrace)
	conn, resp := wxtest.KeepAlive(t, addr, "/")
	if resp == nil || resp.StatusCode != http.StatusOK {
		t.Fatal("a newcomer at the cap was not served once a connection had been silent for silentGrace")
	}
	conn.Close()
	closedByServer(t, silent[0])
	if n := cc.open(); n > max {
		t.Errorf("%d open, over the cap of %d", n, max)
	}
}
