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
