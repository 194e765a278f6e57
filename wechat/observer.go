package wechat

import (
	"time"

	"github.com/sony/gobreaker/v2"
)

// Observer is told what the Client does, for metrics. Its methods are
// called inline, so they must be quick and safe for concurrent use. Every
// string it is given is one of this package's constants (an Op*, a breaker
// name), never request data; errors are the ones callers get.
type Observer interface {
	// WeChatCall is one request sent to WeChat, every API alike: err is nil
	// on errcode 0, an *APIError for another errcode, anything else when no
	// usable answer came. Calls refused before sending (open circuit, no
	// free slot) are not requests and are not reported.
	WeChatCall(op string, err error, took time.Duration)
	// AccessTokenRefresh is one access_token fetch, its retries included.
	AccessTokenRefresh(err error)
	// BreakerState is a circuit breaker's state: at creation and on every change.
	BreakerState(name string, state BreakerState)
}

// BreakerState is a circuit breaker's state, numbered for a gauge.
type BreakerState int

// Circuit breaker states.
const (
	BreakerClosed BreakerState = iota
	BreakerHalfOpen
	BreakerOpen
)

func breakerState(s gobreaker.State) BreakerState {
	switch s {
	case gobreaker.StateOpen:
		return BreakerOpen
	case gobreaker.StateHalfOpen:
		return BreakerHalfOpen
	}
	return BreakerClosed
}

// noObserver is the Observer of a Config that has none.
type noObserver struct{}

func (noObserver) WeChatCall(string, error, time.Duration) {}
func (noObserver) AccessTokenRefresh(error)                {}
func (noObserver) BreakerState(string, BreakerState)       {}
