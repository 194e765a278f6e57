package wechat_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/emulator"
	"github.com/wxtoken/wxtoken/wechat"
)

// recorder is an Observer that keeps what it was told.
type recorder struct {
	mu       sync.Mutex
	calls    []string // op and outcome
	refresh  []error
	breakers []wechat.BreakerState
}

func (r *recorder) WeChatCall(op string, err error, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	outcome := "0"
	var ae *wechat.APIError
	switch {
	case errors.As(err, &ae):
		outcome = "errcode"
	case err != nil:
		outcome = "error"
	}
	r.calls = append(r.calls, op+" "+outcome)
}

func (r *recorder) AccessTokenRefresh(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refresh = append(r.refresh, err)
}

func (r *recorder) BreakerState(name string, s wechat.BreakerState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if name == "wechat "+appID {
		r.breakers = append(r.breakers, s)
	}
}

func (r *recorder) snapshot() ([]string, []error, []wechat.BreakerState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls), slices.Clone(r.refresh), slices.Clone(r.breakers)
}

// TestObserverSeesEveryCall: every request sent to WeChat is reported once
// with its outcome, calls an open circuit refuses are not, the breaker's
// states arrive in order, and access_token fetches are reported.
func TestObserverSeesEveryCall(t *testing.T) {
	rec := &recorder{}
	w := newWorld(t, func(c *wechat.Config) {
		c.BreakerThreshold = 2
		c.BreakerCooldown = 100 * time.Millisecond
		c.Observer = rec
	})
	ctx := context.Background()
	w.emu.SetFault("/sns/jscode2session", emulator.Fault{HTTPStatus: 500})
	for range 3 { // two failures open the circuit; the third is refused unsent
		_, _ = w.client.Code2Session(ctx, app, "c")
	}
	w.emu.SetFault("/sns/jscode2session", emulator.Fault{})
	deadline := time.Now().Add(5 * time.Second)
	var s wechat.Session
	for {
		var err error
		if s, err = w.client.Code2Session(ctx, app, "after-"+time.Now().String()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the circuit did not close: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, _ = w.client.Code2Session(ctx, app, "err-40029")
	if _, err := w.client.CheckSession(ctx, app, s.OpenID, s.SessionKey); err != nil {
		t.Fatal(err)
	}

	calls, refresh, breakers := rec.snapshot()
	want := []string{"jscode2session error", "jscode2session error", "jscode2session 0", "jscode2session errcode",
		"stable_token 0", "checksession 0"}
	if !slices.Equal(calls, want) {
		t.Errorf("calls = %q, want %q", calls, want)
	}
	if len(refresh) != 1 || refresh[0] != nil {
		t.Errorf("access_token refreshes = %v, want one success", refresh)
	}
	wantStates := []wechat.BreakerState{wechat.BreakerClosed, wechat.BreakerOpen, wechat.BreakerHalfOpen, wechat.BreakerClosed}
	if !slices.Equal(breakers, wantStates) {
		t.Errorf("breaker states = %v, want %v", breakers, wantStates)
	}
}
