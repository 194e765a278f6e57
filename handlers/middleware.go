package handlers

import (
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/labstack/echo/v4"
)

// accessLog writes one line per request. It logs the route pattern, never
// the URL's query, headers or body: those carry codes, tokens and user data.
func (h *server) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			// Render now so the logged status is the one the client got.
			c.Error(err)
		}
		status := c.Response().Status
		// slog.Attr values, not ...any: this runs on every request, and
		// boxing each value into an interface would allocate.
		attrs := make([]slog.Attr, 0, 8)
		attrs = append(attrs,
			slog.String("method", c.Request().Method),
			slog.String("route", c.Path()),
			slog.Int("status", status),
			// Whole microseconds: slog's JSON handler writes a float
			// through encoding/json, several times the cost of an integer.
			slog.Int64("duration_us", time.Since(start).Microseconds()),
			slog.Int64("bytes", c.Response().Size),
			slog.String("client_ip", c.RealIP()),
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
		h.cfg.Logger.LogAttrs(c.Request().Context(), level, "request", attrs...)
		return nil
	}
}

// recoverer turns a panic in a handler into a logged 500 so one bad request
// cannot take the process down. The panic value is logged, not answered.
func (h *server) recoverer(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
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
}
