package main

import (
	"container/list"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// connCap keeps at most max connections open, fed by http.Server.ConnState.
// Idle keep-alive connections cost memory (buffers, a goroutine, TLS state
// behind a proxy) for the whole idle timeout; without a cap, thousands of
// them held open are enough to exhaust a replica. When a new connection
// arrives at the cap, the one idle the longest is closed to make room (a
// client reusing it reconnects, as after the idle timeout); when none is
// idle, every connection is in use and the new one is closed at once.
type connCap struct {
	max    int
	logger *slog.Logger
	now    func() time.Time

	mu      sync.Mutex
	conns   map[net.Conn]*list.Element // open connections; the element is set while idle
	idle    *list.List                 // idle connections, the longest idle first
	shed    int                        // idle connections closed for newcomers
	refused int                        // newcomers closed because none was idle
	warned  time.Time
}

func newConnCap(max int, logger *slog.Logger) *connCap {
	return &connCap{max: max, logger: logger, now: time.Now, conns: map[net.Conn]*list.Element{}, idle: list.New()}
}

// track is the http.Server.ConnState hook.
func (c *connCap) track(conn net.Conn, state http.ConnState) {
	var closing net.Conn
	c.mu.Lock()
	switch state {
	case http.StateNew:
		if len(c.conns) >= c.max {
			if oldest := c.idle.Front(); oldest != nil {
				closing = c.idle.Remove(oldest).(net.Conn)
				delete(c.conns, closing)
				c.shed++
			} else {
				closing = conn
				c.refused++
			}
			c.warnLocked()
		}
		if closing != conn {
			c.conns[conn] = nil
		}
	case http.StateActive:
		if e, ok := c.conns[conn]; ok && e != nil {
			c.idle.Remove(e)
			c.conns[conn] = nil
		}
	case http.StateIdle:
		if e, ok := c.conns[conn]; ok && e == nil {
			c.conns[conn] = c.idle.PushBack(conn)
		}
	case http.StateHijacked, http.StateClosed:
		if e, ok := c.conns[conn]; ok {
			if e != nil {
				c.idle.Remove(e)
			}
			delete(c.conns, conn)
		}
	}
	c.mu.Unlock()
	if closing != nil {
		_ = closing.Close()
	}
}

// warnLocked logs that the cap was reached, at most once a minute, with
// the running counts; the caller holds mu.
func (c *connCap) warnLocked() {
	now := c.now()
	if now.Sub(c.warned) < time.Minute {
		return
	}
	c.warned = now
	c.logger.Warn("connection cap reached: closing the longest-idle connections, or new ones when none is idle",
		"max_conns", c.max, "idle_closed", c.shed, "new_refused", c.refused)
}

// open is how many connections are open, as the server last reported.
func (c *connCap) open() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}
