package handlers

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/labstack/echo/v4"
)

// frame is what every request passes through, in one middleware: its id
// (a caller's plain X-Request-Id, or a fresh one), the security headers,
// panic recovery, and, once the answer is rendered, the metrics and the
// access log line. One closure instead of a chain of five: they ran on every
// request, each taking the clock or looking at the route on its own, and on
// a cached bearer call they cost more than the token check.
func (h *server) frame(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		req := c.Request()
		// A caller's id (a proxy's, for log correlation) is kept only when
		// it is short and plain, so a client cannot stuff the logs.
		id := req.Header.Get(echo.HeaderXRequestID)
		if id != "" && !plainID(id) {
			req.Header.Del(echo.HeaderXRequestID)
			id = ""
		}
		if id == "" {
			id = newRequestID()
		}
		res := c.Response()
		hdr := res.Header()
		hdr.Set(echo.HeaderXRequestID, id)
		hdr.Set("X-Content-Type-Options", "nosniff")
		hdr.Set("Referrer-Policy", "no-referrer")
		// Every line logged with the request's context carries its id.
		c.SetRequest(req.WithContext(withRequestID(req.Context(), id)))

		err := h.recovered(c, next)
		if err != nil {
			// Render now, so the status observed and logged is the one the
			// client got.
			c.Error(err)
		}
		status := res.Status
		took := time.Since(start)
		route := c.Path()
		label := route
		if !h.routes[label] {
			label = "" // a path no route matched: a scanner's, say
		}
		h.cfg.Observer.Request(label, req.Method, status, took)
		h.accessLog(req.Method, route, status, took, res.Size, c.RealIP(), id, err)
		return nil
	}
}

// accessLog writes the request's line. It logs the route pattern, never the
// URL's query, headers or body: those carry codes, tokens and user data.
// The line carries its request_id itself and is logged without the
// request's context, so LogHandler does not copy the record to add it.
func (h *server) accessLog(method, route string, status int, took time.Duration, size int64, clientIP, id string, err error) {
	// slog.Attr values, not ...any: boxing each value would allocate.
	attrs := make([]slog.Attr, 0, 9)
	attrs = append(attrs,
		slog.String("method", method),
		slog.String("route", route),
		slog.Int("status", status),
		// Whole microseconds: slog's JSON handler writes a float through
		// encoding/json, several times the cost of an integer.
		slog.Int64("duration_us", took.Microseconds()),
		slog.Int64("bytes", size),
		slog.String("client_ip", clientIP),
		slog.String("request_id", id),
	)
	if err != nil {
		if p, ok := problemFor(err); ok {
			attrs = append(attrs, slog.String("problem", p.Type))
			if p.Errcode != nil {
				attrs = append(attrs, slog.Int("errcode", *p.Errcode))
			}
		}
	}
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelWarn
	}
	h.cfg.Logger.LogAttrs(context.Background(), level, "request", attrs...)
}

// newRequestID makes a request id: 128 random bits in hex. Not a counter,
// which would tell anyone reading the header how busy the service is, and
// not crypto/rand: the id is no secret, and math/rand/v2's generator is
// unpredictable enough and takes no lock.
func newRequestID() string {
	var raw [16]byte
	binary.BigEndian.PutUint64(raw[:8], rand.Uint64())
	binary.BigEndian.PutUint64(raw[8:], rand.Uint64())
	var out [32]byte
	hex.Encode(out[:], raw[:])
	return string(out[:])
}

// recovered runs next, turning a panic into a logged 500 so one bad request
// cannot take the process down. The panic value is logged, not answered.
func (h *server) recovered(c echo.Context, next echo.HandlerFunc) (err error) {
	defer func() {
		if r := recover(); r != nil {
			buf := make([]byte, 4<<10)
			buf = buf[:runtime.Stack(buf, false)]
			h.cfg.Logger.ErrorContext(c.Request().Context(), "panic in handler", "route", c.Path(), "panic", fmt.Sprintf("%T", r), "stack", string(buf))
			err = fmt.Errorf("handlers: panic %T", r)
		}
	}()
	return next(c)
}
