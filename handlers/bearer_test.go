package handlers_test

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/handlers"
	"github.com/wxtoken/wxtoken/token"
	"github.com/wxtoken/wxtoken/wechat"
)

// sendAuth posts body to path with each of authorizations as its own
// Authorization header line.
func (f *fixture) sendAuth(t testing.TB, path, body string, authorizations ...string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for _, a := range authorizations {
		req.Header.Add("Authorization", a)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

// TestBearerRefusesSeveralAuthorizationHeaders (issue 11.13): two
// Authorization headers are a 400 invalid-request on every bearer route,
// whatever they hold, and WeChat is never asked; one good header works.
func TestBearerRefusesSeveralAuthorizationHeaders(t *testing.T) {
	f := newFixture(t, options{dev: true})
	tok := f.login(t, appA, "two-headers")
	other := f.login(t, appB, "two-headers-b")
	enc := f.post(t, "/dev/encrypt", tok, `{"nickName":"Band"}`)
	wechatCalls := func() int {
		return f.wx.Calls("/wxa/business/getuserphonenumber") + f.wx.Calls("/wxa/checksession") + f.wx.Calls("/cgi-bin/stable_token")
	}
	before := wechatCalls()
	for _, path := range []string{"/v1/decrypt", "/v1/userinfo", "/v1/phone-number", "/v1/session/check", "/dev/encrypt"} {
		for name, headers := range map[string][]string{
			"same token twice":   {"Bearer " + tok, "Bearer " + tok},
			"two users' tokens":  {"Bearer " + tok, "Bearer " + other},
			"good then garbage":  {"Bearer " + tok, "Bearer x.y.z"},
			"basic then bearer":  {"Basic dXNlcjpwYXNz", "Bearer " + tok},
			"three headers":      {"Bearer " + tok, "Bearer " + tok, "Bearer " + tok},
			"empty then a token": {"", "Bearer " + tok},
		} {
			t.Run(path+"/"+name, func(t *testing.T) {
				a := f.sendAuth(t, path, string(enc.body), headers...)
				p := wantProblem(t, a, http.StatusBadRequest, "invalid-request")
				if strings.Contains(p["detail"].(string), tok) {
					t.Fatal("the answer echoes a token")
				}
				if got := a.header.Get("WWW-Authenticate"); !strings.Contains(got, `error="invalid_request"`) {
					t.Fatalf("WWW-Authenticate %q", got)
				}
			})
		}
	}
	if after := wechatCalls(); after != before {
		t.Fatalf("WeChat was called %d times for refused requests", after-before)
	}
	if a := f.sendAuth(t, "/v1/decrypt", string(enc.body), "Bearer "+tok); a.status != http.StatusOK {
		t.Fatalf("one Authorization header: %d %s", a.status, a.body)
	}
}

// settable is a clock the test moves; the token services read it.
type settable struct{ unix atomic.Int64 }

func (s *settable) now() time.Time  { return time.Unix(s.unix.Load(), 0) }
func (s *settable) set(t time.Time) { s.unix.Store(t.Unix()) }

// TestBearerCachedTokenAnswersAlike: the same requests get the same answers
// (status, problem body, challenge) from a server whose token service has
// the cache and from one without it, on the cache's miss and on its hit,
// for good and refused calls, and once the token has expired.
func TestBearerCachedTokenAnswersAlike(t *testing.T) {
	clock := &settable{}
	clock.set(time.Now())
	cached := newFixture(t, options{dev: true, cacheEntries: 100, now: clock.now})
	// A second server over the same keys and WeChat, without a cache.
	plainTokens, err := token.New(token.Config{Issuer: "https://wxtoken.test", TTL: time.Hour, Leeway: 30 * time.Second,
		Audiences: []string{appA, appB}, Keys: cached.store, Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	client, err := wechat.NewClient(wechat.Config{BaseURL: cached.wxURL, Timeout: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	e, err := handlers.New(handlers.Config{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), WeChat: client, Tokens: plainTokens,
		Apps: apps{{AppID: appA, Secret: secretA}, {AppID: appB, Secret: secretB}},
		JWKS: func() ([]byte, string) { return cached.store.Current().JWKS() }, Dev: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	plain := &fixture{srv: httptest.NewServer(e)}
	defer plain.srv.Close()

	tok := cached.login(t, appA, "alike")
	enc := cached.post(t, "/dev/encrypt", tok, `{"nickName":"Band","gender":1}`)
	calls := []struct{ name, path, body string }{
		{"decrypt", "/v1/decrypt", string(enc.body)},
		{"decrypt, data of nobody", "/v1/decrypt", `{"encryptedData":"AAAAAAAAAAAAAAAAAAAAAA==","iv":"AAAAAAAAAAAAAAAAAAAAAA=="}`},
		{"decrypt, malformed iv", "/v1/decrypt", `{"encryptedData":"AAAAAAAAAAAAAAAAAAAAAA==","iv":"AA=="}`},
		{"userinfo", "/v1/userinfo", string(enc.body)},
		{"userinfo, bad signature", "/v1/userinfo", `{"rawData":"{}","signature":"00"}`},
		{"session check", "/v1/session/check", ""},
	}
	compare := func(t *testing.T, when string) {
		t.Helper()
		for _, c := range calls {
			want := plain.post(t, c.path, tok, c.body)
			for _, round := range []string{"first", "again"} {
				got := cached.post(t, c.path, tok, c.body)
				if got.status != want.status || !bytes.Equal(got.body, want.body) ||
					got.header.Get("WWW-Authenticate") != want.header.Get("WWW-Authenticate") ||
					got.header.Get("Content-Type") != want.header.Get("Content-Type") {
					t.Fatalf("%s, %s, %s call: cached server %d %s (%q), plain server %d %s (%q)", when, c.name, round,
						got.status, got.body, got.header.Get("WWW-Authenticate"), want.status, want.body, want.header.Get("WWW-Authenticate"))
				}
			}
		}
	}
	compare(t, "fresh token")
	if n := cached.tokens.CachedTokens(); n != 1 {
		t.Fatalf("the cached server holds %d verified tokens, want 1", n)
	}
	if plainTokens.CachedTokens() != 0 {
		t.Fatal("the plain server has a cache")
	}
	clock.set(clock.now().Add(time.Hour + 31*time.Second)) // past exp plus the leeway
	compare(t, "expired token")
	if a := cached.post(t, "/v1/decrypt", tok, string(enc.body)); !strings.Contains(a.header.Get("WWW-Authenticate"), "token expired") {
		t.Fatalf("an expired cached token: %d %s", a.status, a.header.Get("WWW-Authenticate"))
	}
	if n := cached.tokens.CachedTokens(); n != 0 {
		t.Fatalf("an expired token stays cached (%d entries)", n)
	}
}

// TestBearerCacheRevokedByEmergencyRotation: a token accepted and cached is
// refused on its very next use once an emergency rotation is loaded.
func TestBearerCacheRevokedByEmergencyRotation(t *testing.T) {
	f := newFixture(t, options{dev: true, cacheEntries: 100})
	tok := f.login(t, appA, "revoke")
	enc := f.post(t, "/dev/encrypt", tok, `{"nickName":"Band"}`)
	for range 2 {
		if a := f.post(t, "/v1/decrypt", tok, string(enc.body)); a.status != http.StatusOK {
			t.Fatalf("decrypt before rotation: %d %s", a.status, a.body)
		}
	}
	if n := f.tokens.CachedTokens(); n != 1 {
		t.Fatalf("%d cached tokens, want 1", n)
	}
	if err := f.dir.Rotate(true); err != nil { // what 'wxtoken keys rotate --now' does
		t.Fatal(err)
	}
	if err := f.store.Reload(); err != nil { // what SIGHUP or the next poll does
		t.Fatal(err)
	}
	a := f.post(t, "/v1/decrypt", tok, string(enc.body))
	wantProblem(t, a, http.StatusUnauthorized, "invalid-token")
	if n := f.tokens.CachedTokens(); n != 0 {
		t.Fatalf("%d tokens still cached after the key set changed", n)
	}
}
