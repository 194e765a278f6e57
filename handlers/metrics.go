package handlers

import (
	"time"

	"github.com/labstack/echo/v4"
)

// Observer is told about answered requests and rate-limit refusals, for
// metrics; *metrics.Metrics implements it. Its methods run inline on every
// request, so they must be quick and safe for concurrent use.
type Observer interface {
	// Request is one answered request. route is the matched route's
	// pattern, "" when none matched; never the raw path.
	Request(route, method string, status int, took time.Duration)
	// RateLimited is one 429 from the named limiter (a Limiter* constant).
	RateLimited(limiter string)
}

// Names of the rate limiters, as Observer.RateLimited reports them.
const (
	LimiterLogin    = "login"
	LimiterUser     = "user"
	LimiterAuthFail = "auth_fail"
	LimiterDecrypt  = "decrypt"
)

// observe reports every request to the Observer once its answer is
// rendered. The route label is taken only from the routes registered in
// New, so a path no route matched (a scanner's, say) reports "" whatever
// echo's router does with it.
func (h *server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			// Render now so the status observed is the one the client got.
			c.Error(err)
			err = nil
		}
		route := c.Path()
		if !h.routes[route] {
			route = ""
		}
		h.cfg.Observer.Request(route, c.Request().Method, c.Response().Status, time.Since(start))
		return err
	}
}

// routeSet lists the patterns of e's routes.
func routeSet(e *echo.Echo) map[string]bool {
	set := map[string]bool{}
	for _, r := range e.Routes() {
		set[r.Path] = true
	}
	return set
}

// noObserver is the Observer of a Config that has none.
type noObserver struct{}

func (noObserver) Request(string, string, int, time.Duration) {}
func (noObserver) RateLimited(string)                         {}
