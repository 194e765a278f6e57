package server

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
// client reusing it reconnects, as after the idle timeout); failing that,
// the oldest connection that has sent nothing for silentGrace (a client
// means to send its request at once; one that holds a socket open without a
// word is a slowloris filling the cap); and when every connection is busy,
// the new one is closed at once.
type connCap struct {
	max    int
	logger *slog.Logger
	now    func() time.Time

	mu      sync.Mutex
	conns   map[net.Conn]slot // open connections
	idle    *list.List        // idle connections, the longest idle first
	silent  *list.List        // connections yet to send a request, the oldest first
	shed    int               // idle or silent connections closed for newcomers
	refused int               // newcomers closed because none was idle
	warned  time.Time
}

// silentGrace is how long a new connection may send nothing before a
// newcomer at the cap may take its place.
const silentGrace = time.Second

// slot is where a connection is listed: in idle, in silent, or in neither
// (busy).
type slot struct {
	list *list.List
	elem *list.Element
}

// arrival is a silent connection and when it arrived.
type arrival struct {
	conn net.Conn
	at   time.Time
}

func newConnCap(max int, logger *slog.Logger) *connCap {
	return &connCap{max: max, logger: logger, now: time.Now, conns: map[net.Conn]slot{}, idle: list.New(), silent: list.New()}
}

// unlistLocked takes conn off the list it is on; the caller holds mu.
func (c *connCap) unlistLocked(conn net.Conn) {
	if s, ok := c.conns[conn]; ok && s.list != nil {
		s.list.Remove(s.elem)
		c.conns[conn] = slot{}
	}
}

// victimLocked picks the connection a newcomer at the cap replaces: the
// longest idle, else the oldest silent past silentGrace, else none.
func (c *connCap) victimLocked(now time.Time) net.Conn {
	if e := c.idle.Front(); e != nil {
		return e.Value.(net.Conn)
	}
	if e := c.silent.Front(); e != nil && now.Sub(e.Value.(arrival).at) >= silentGrace {
		return e.Value.(arrival).conn
	}
	return nil
}

// track is the http.Server.ConnState hook.
func (c *connCap) track(conn net.Conn, state http.ConnState) {
	var closing net.Conn
	c.mu.Lock()
	switch state {
	case http.StateNew:
		now := c.now()
		if len(c.conns) >= c.max {
			if victim := c.victimLocked(now); victim != nil {
				closing = victim
				c.unlistLocked(victim)
				delete(c.conns, victim)
				c.shed++
			} else {
				closing = conn
				c.refused++
			}
			c.warnLocked()
		}
		if closing != conn {
			c.conns[conn] = slot{list: c.silent, elem: c.silent.PushBack(arrival{conn, now})}
		}
	case http.StateActive:
		c.unlistLocked(conn)
	case http.StateIdle:
		if _, ok := c.conns[conn]; ok {
			c.unlistLocked(conn)
			c.conns[conn] = slot{list: c.idle, elem: c.idle.PushBack(conn)}
		}
	case http.StateHijacked, http.StateClosed:
		if _, ok := c.conns[conn]; ok {
			c.unlistLocked(conn)
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
	c.logger.Warn("connection cap reached: closing the longest-idle (or longest-silent) connections, or new ones when every one is busy",
		"max_conns", c.max, "idle_closed", c.shed, "new_refused", c.refused)
}

// open is how many connections are open, as the server last reported.
func (c *connCap) open() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}
