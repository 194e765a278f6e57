package handlers_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/token"
)

// payload is a token's claims, read without verifying it.
func payload(t testing.TB, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestSessionResetKeepsAuthTime: a login's token carries auth_time; every
// reset carries it unchanged (with a new iat), up to token.MaxLifetime after
// the login; a reset later than that is refused as login-too-old before
// WeChat is asked (the user's key is untouched), while the token still
// works on the other routes until it expires.
func TestSessionResetKeepsAuthTime(t *testing.T) {
	clock := &settable{}
	start := time.Unix(1_800_000_000, 0)
	clock.set(start)
	f := newFixture(t, options{now: clock.now})
	a := f.post(t, "/v1/login", "", `{"code":"reset-auth-time","appid":"`+appA+`"}`)
	if a.status != http.StatusOK {
		t.Fatalf("login: %d %s", a.status, a.body)
	}
	tok, openid := a.json(t)["access_token"].(string), a.json(t)["openid"].(string)
	if c := payload(t, tok); c["auth_time"] != float64(start.Unix()) || c["iat"] != c["auth_time"] {
		t.Fatalf("login token: auth_time %v, iat %v; want both %d", c["auth_time"], c["iat"], start.Unix())
	}
	// The fixture's tokens live an hour: a reset every 48 minutes keeps
	// one valid, and the 30th lands exactly MaxLifetime after the login.
	const step = 48 * time.Minute
	for n := 1; time.Duration(n)*step <= token.MaxLifetime; n++ {
		clock.set(start.Add(time.Duration(n) * step))
		a := f.post(t, "/v1/session/reset", tok, "")
		if a.status != http.StatusOK {
			t.Fatalf("reset %d: %d %s", n, a.status, a.body)
		}
		tok = a.json(t)["access_token"].(string)
		c := payload(t, tok)
		if c["auth_time"] != float64(start.Unix()) || c["iat"] != float64(clock.now().Unix()) {
			t.Fatalf("reset %d: auth_time %v, iat %v; want %d, %d", n, c["auth_time"], c["iat"], start.Unix(), clock.now().Unix())
		}
	}
	key := f.wx.CurrentSessionKey(appA, openid)
	clock.set(start.Add(token.MaxLifetime + time.Second))
	wantProblem(t, f.post(t, "/v1/session/reset", tok, ""), http.StatusForbidden, "login-too-old")
	if f.wx.CurrentSessionKey(appA, openid) != key {
		t.Error("WeChat replaced the key of a refused reset")
	}
	if a := f.post(t, "/v1/session/check", tok, ""); a.status != http.StatusOK || a.json(t)["valid"] != true {
		t.Errorf("the refused token on /v1/session/check: %d %s", a.status, a.body)
	}
}
