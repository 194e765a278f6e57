package handlers_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// observed is a handlers.Observer that keeps what it was told.
type observed struct {
	mu       sync.Mutex
	requests []string // route status
	limited  []string
}

func (o *observed) Request(route, _ string, status int, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.requests = append(o.requests, route+" "+http.StatusText(status))
}

func (o *observed) RateLimited(limiter string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.limited = append(o.limited, limiter)
}

// TestObserverSeesRoutesAndRefusals: each limiter reports its own refusals
// by name, and requests are reported by route pattern with the status the
// client got; a path no route matches reports no route at all.
func TestObserverSeesRoutesAndRefusals(t *testing.T) {
	rec := &observed{}
	f := newFixture(t, options{dev: true, loginRate: 0.01, userRate: 0.01, authFailRate: 0.01, observer: rec})
	mallory := f.login(t, appA, "observed-mallory")
	enc := f.post(t, "/dev/encrypt", mallory, `{"nickName":"M"}`).json(t)
	forged, _ := json.Marshal(map[string]any{"encryptedData": enc["encryptedData"], "iv": "AAAAAAAAAAAAAAAAAAAAAA=="})
	for range 3 {
		wantProblem(t, f.post(t, "/v1/decrypt", mallory, string(forged)), 400, "decryption-failed")
	}
	wantProblem(t, f.post(t, "/v1/decrypt", mallory, string(forged)), 429, "rate-limited")
	for range 2 {
		if a := f.post(t, "/v1/session/check", mallory, ``); a.status != 200 {
			t.Fatalf("session check: %d %s", a.status, a.body)
		}
	}
	wantProblem(t, f.post(t, "/v1/session/check", mallory, ``), 429, "rate-limited")
	f.login(t, appA, "observed-second")
	wantProblem(t, f.post(t, "/v1/login", "", `{"code":"observed-third"}`), 429, "rate-limited")
	for range 3 {
		wantProblem(t, f.post(t, "/v1/decrypt", "", `{}`), 401, "unauthorized")
	}
	wantProblem(t, f.post(t, "/v1/decrypt", "", `{}`), 429, "rate-limited")
	const probe = "/wp-admin/observed-probe"
	if a := f.do(t, "GET", probe, "", "", ""); a.status != 404 {
		t.Fatalf("GET %s: %d", probe, a.status)
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if want := []string{"decrypt", "user", "login", "auth_fail"}; !slices.Equal(rec.limited, want) {
		t.Errorf("refusals = %q, want %q", rec.limited, want)
	}
	for _, want := range []string{"/v1/login OK", "/dev/encrypt OK", "/v1/decrypt Bad Request", "/v1/decrypt Too Many Requests",
		"/v1/session/check OK", "/v1/session/check Too Many Requests", "/v1/login Too Many Requests",
		"/v1/decrypt Unauthorized", " Not Found"} {
		if !slices.Contains(rec.requests, want) {
			t.Errorf("no request reported as %q in %q", want, rec.requests)
		}
	}
	if n := len(rec.requests); n != 16 {
		t.Errorf("%d requests reported, want 16 (each once)", n)
	}
}
