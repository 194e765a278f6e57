package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/wxtoken/wxtoken/verify"
	"github.com/wxtoken/wxtoken/verify/echoverify"
)

// testClock is a verifier's clock that a test moves forward, so cache
// expiry is shown without sleeping.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// countingTransport counts the requests a verifier makes, per path.
type countingTransport struct {
	next http.RoundTripper
	mu   sync.Mutex
	hits map[string]int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.hits[r.URL.Path]++
	c.mu.Unlock()
	return c.next.RoundTrip(r)
}

func (c *countingTransport) count(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits[path]
}

const jwksPath = "/.well-known/jwks.json"

// mustVerifier builds a verifier for testIssuer served by serverURL, with
// its own clock and request counter.
func mustVerifier(t testing.TB, serverURL string) (*verify.Verifier, *testClock, *countingTransport) {
	t.Helper()
	ct := &countingTransport{next: issuerClient(t, serverURL).Transport, hits: map[string]int{}}
	clock := &testClock{now: time.Now()}
	v, err := verify.New(context.Background(), verify.Config{
		Issuer: testIssuer,
		AppIDs: []string{testAppID},
		Client: &http.Client{Transport: ct, Timeout: 10 * time.Second},
		Now:    clock.Now,
	})
	if err != nil {
		t.Fatalf("verify.New: %v", err)
	}
	return v, clock, ct
}

// jwksMaxAge is the max-age wxtoken's JWKS answer declares.
func jwksMaxAge(t testing.TB, base string) time.Duration {
	t.Helper()
	cc := do(t, http.MethodGet, base+jwksPath, "", "", nil).Header.Get("Cache-Control")
	var secs int
	if _, err := fmt.Sscanf(cc, "public, max-age=%d", &secs); err != nil || secs <= 0 {
		t.Fatalf("JWKS Cache-Control %q: %v", cc, err)
	}
	return time.Duration(secs) * time.Second
}

// loginNewKID logs in until the server signs with a key other than old
// (the server reloads the keys directory on its own schedule).
func loginNewKID(t testing.TB, base string, old ...string) string {
	t.Helper()
	var tok string
	n := 0
	eventually(t, 10*time.Second, "a token signed by a new key", func() bool {
		n++
		tok, _ = login(t, base, fmt.Sprintf("rotation-code-%d-%d", len(old), n))
		return !contains(old, kidOf(t, tok))
	})
	return tok
}

// TestVerifyAcrossRotations: a downstream verifier, discovering the keys
// from the issuer alone, keeps working across a normal rotation without a
// refetch (the next key was pre-published), accepts new tokens after one
// refetch on an emergency rotation, and refuses old tokens once its cached
// JWKS passes max-age.
func TestVerifyAcrossRotations(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	e := f.env.with("WXTOKEN_ISSUER", testIssuer, "WXTOKEN_RELOAD_INTERVAL", "100ms")
	s := startServer(t, e)
	ctx := context.Background()

	v, _, ct := mustVerifier(t, s.URL)
	first, _ := login(t, s.URL, "before-rotation")
	c, err := v.Verify(ctx, first)
	if err != nil {
		t.Fatalf("first token: %v", err)
	}
	if c.AppID != testAppID || c.OpenID == "" || c.ID == "" || c.UnionID == "" {
		t.Errorf("claims: %+v", c)
	}
	if n := ct.count(jwksPath); n != 1 {
		t.Fatalf("JWKS fetched %d times after the first token, want 1", n)
	}

	// Normal rotation: the new active key was already in the cached JWKS.
	mustRun(t, e, "keys", "rotate")
	second := loginNewKID(t, s.URL, kidOf(t, first))
	for name, tok := range map[string]string{"new": second, "retired key's": first} {
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatalf("after a normal rotation, the %s token: %v", name, err)
		}
	}
	if n := ct.count(jwksPath); n != 1 {
		t.Fatalf("a normal rotation made the verifier refetch: %d fetches, want 1", n)
	}

	// Emergency rotation. A second verifier that sees no new token keeps
	// old tokens only until its cache passes max-age.
	lagging, lagClock, _ := mustVerifier(t, s.URL)
	mustRun(t, e, "keys", "rotate", "--now")
	third := loginNewKID(t, s.URL, kidOf(t, first), kidOf(t, second))

	if _, err := lagging.Verify(ctx, second); err != nil {
		t.Fatalf("within max-age a cached old key still verifies (the documented window): %v", err)
	}
	lagClock.Advance(jwksMaxAge(t, s.URL) + time.Second)
	if _, err := lagging.Verify(ctx, second); !errors.Is(err, verify.ErrInvalidToken) {
		t.Fatalf("past max-age, an old token: %v, want ErrInvalidToken", err)
	}

	// Many requests with the new kid at once: all accepted, one refetch.
	var wg sync.WaitGroup
	var refused atomic.Int32
	for range 20 {
		wg.Go(func() {
			if _, err := v.Verify(ctx, third); err != nil {
				refused.Add(1)
				t.Errorf("after an emergency rotation, the new token: %v", err)
			}
		})
	}
	wg.Wait()
	if refused.Load() > 0 {
		t.FailNow()
	}
	if n := ct.count(jwksPath); n != 2 {
		t.Fatalf("JWKS fetched %d times, want 2 (one refetch for the unknown kid)", n)
	}
	for name, tok := range map[string]string{"first": first, "second": second} {
		if _, err := v.Verify(ctx, tok); !errors.Is(err, verify.ErrInvalidToken) {
			t.Errorf("after the refetch the %s (old) token: %v, want ErrInvalidToken", name, err)
		}
	}
}

// TestVerifyRefusesBadTokens: a table of tokens and headers a downstream
// service must refuse, through the net/http middleware, with RFC 6750
// challenges.
func TestVerifyRefusesBadTokens(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	s := startServer(t, f.env.with("WXTOKEN_ISSUER", testIssuer))
	v, clock, ct := mustVerifier(t, s.URL)
	good, _ := login(t, s.URL, "good")
	header := func(seg []byte) string { return b64(seg) }
	payload := string(mustSegment(t, good, 1))
	parts := splitToken(good)

	h := v.Middleware("downstream")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := verify.ClaimsFrom(r.Context())
		if !ok {
			t.Error("no claims in the context")
		}
		_, _ = w.Write([]byte(c.OpenID))
	}))
	tests := []struct {
		name       string
		auth       []string
		advance    time.Duration
		wantStatus int
		wantAuth   string
	}{
		{"good", []string{"Bearer " + good}, 0, 200, ""},
		{"no header", nil, 0, 401, `Bearer realm="downstream"`},
		{"basic scheme", []string{"Basic YTpi"}, 0, 400, `Bearer realm="downstream", error="invalid_request", error_description="one Bearer token is expected"`},
		{"two headers", []string{"Bearer " + good, "Bearer " + good}, 0, 400, `Bearer realm="downstream", error="invalid_request", error_description="one Bearer token is expected"`},
		{"tampered payload", []string{"Bearer " + parts[0] + "." + b64([]byte(payload[:len(payload)-1]+`,"x":1}`)) + "." + parts[2]}, 0, 401, `Bearer realm="downstream", error="invalid_token", error_description="the access token is invalid"`},
		{"typ JWT", []string{"Bearer " + header([]byte(`{"alg":"ES256","kid":"`+kidOf(t, good)+`","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2]}, 0, 401, `Bearer realm="downstream", error="invalid_token", error_description="the access token is invalid"`},
		{"alg none", []string{"Bearer " + header([]byte(`{"alg":"none","kid":"`+kidOf(t, good)+`","typ":"at+jwt"}`)) + "." + parts[1] + "."}, 0, 401, `Bearer realm="downstream", error="invalid_token", error_description="the access token is invalid"`},
		{"unknown kid", []string{"Bearer " + header([]byte(`{"alg":"ES256","kid":"forged","typ":"at+jwt"}`)) + "." + parts[1] + "." + parts[2]}, 0, 401, `Bearer realm="downstream", error="invalid_token", error_description="the access token is invalid"`},
		{"expired", []string{"Bearer " + good}, 25 * time.Hour, 401, `Bearer realm="downstream", error="invalid_token", error_description="the access token expired"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock.Advance(tc.advance)
			defer clock.Advance(-tc.advance)
			req := httptest.NewRequest(http.MethodGet, "/me", nil)
			for _, a := range tc.auth {
				req.Header.Add("Authorization", a)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.wantStatus, rec.Body)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != tc.wantAuth {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tc.wantAuth)
			}
			if tc.wantStatus != 200 && rec.Header().Get("Content-Type") != "application/problem+json" {
				t.Errorf("Content-Type = %q", rec.Header().Get("Content-Type"))
			}
		})
	}
	// Forged kids are rate-limited: the one forged-kid case above may cost
	// one refetch, not one per request.
	before := ct.count(jwksPath)
	for range 5 {
		forged := header([]byte(`{"alg":"ES256","kid":"forged-again","typ":"at+jwt"}`)) + "." + parts[1] + "." + parts[2]
		if _, err := v.Verify(context.Background(), forged); !errors.Is(err, verify.ErrInvalidToken) {
			t.Fatalf("forged kid: %v", err)
		}
	}
	if n := ct.count(jwksPath) - before; n > 0 {
		t.Errorf("5 forged kids within the rate limit made %d refetches, want 0", n)
	}
}

// TestVerifyRevalidatesWithETag: past max-age the verifier revalidates with
// If-None-Match; a 304 keeps the keys without a new download.
func TestVerifyRevalidatesWithETag(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	s := startServer(t, f.env.with("WXTOKEN_ISSUER", testIssuer))
	var notModified atomic.Int32
	base := issuerClient(t, s.URL).Transport
	clock := &testClock{now: time.Now()}
	v, err := verify.New(context.Background(), verify.Config{
		Issuer: testIssuer, AppIDs: []string{testAppID}, Now: clock.Now,
		Client: &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := base.RoundTrip(r)
			if err == nil && resp.StatusCode == http.StatusNotModified {
				notModified.Add(1)
			}
			return resp, err
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := login(t, s.URL, "etag")
	for range 3 {
		clock.Advance(jwksMaxAge(t, s.URL) + time.Second)
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := notModified.Load(); n != 3 {
		t.Errorf("%d revalidations answered 304, want 3", n)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestEchoMiddleware: the Echo middleware hands the handler typed claims
// and answers refused requests with the same challenge.
func TestEchoMiddleware(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	s := startServer(t, f.env.with("WXTOKEN_ISSUER", testIssuer))
	v, _, _ := mustVerifier(t, s.URL)
	tok, answer := login(t, s.URL, "echo")

	e := echo.New()
	e.GET("/me", func(c echo.Context) error {
		claims, ok := echoverify.Claims(c)
		if !ok {
			return echo.ErrInternalServerError
		}
		return c.String(http.StatusOK, claims.OpenID)
	}, echoverify.Middleware(v, "downstream"))

	tests := []struct {
		name, auth string
		wantStatus int
		wantBody   string
	}{
		{"good", "Bearer " + tok, 200, answer["openid"].(string)},
		{"refused", "Bearer " + tok + "x", 401, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/me", nil)
			req.Header.Set("Authorization", tc.auth)
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if tc.wantBody != "" && rec.Body.String() != tc.wantBody {
				t.Errorf("body %q, want %q", rec.Body, tc.wantBody)
			}
			if tc.wantStatus == 401 && rec.Header().Get("WWW-Authenticate") == "" {
				t.Error("no challenge")
			}
		})
	}
}

// TestExampleDownstream builds examples/downstream and runs it as its own
// process against a real wxtoken: it discovers the keys from the issuer
// (reached through an HTTP proxy, as HTTP_PROXY says) and answers /me.
func TestExampleDownstream(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts an OS process")
	}
	t.Parallel()
	f := newFixture(t, testAppID)
	s := startServer(t, f.env.with("WXTOKEN_ISSUER", testIssuer))
	target, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(httputil.NewSingleHostReverseProxy(target))
	t.Cleanup(proxy.Close)

	bin := filepath.Join(t.TempDir(), "downstream")
	if out, err := exec.Command("go", "build", "-o", bin, "./examples/downstream").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HTTP_PROXY=" + proxy.URL, "WXTOKEN_ISSUER=" + testIssuer,
		"WECHAT_APPID=" + testAppID, "DOWNSTREAM_ADDR=127.0.0.1:0"}
	logs := newLogBuffer()
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var base string
	select {
	case addr := <-logs.addr:
		base = "http://" + addr
	case <-time.After(20 * time.Second):
		t.Fatalf("downstream did not start\n%s", logs.String())
	}

	tok, answer := login(t, s.URL, "example")
	got := do(t, http.MethodGet, base+"/me", tok, "", nil)
	if got.Status != http.StatusOK {
		t.Fatalf("/me: %d %s", got.Status, got.Body)
	}
	if m := got.json(t); m["openid"] != answer["openid"] || m["appid"] != testAppID {
		t.Errorf("/me = %s", got.Body)
	}
	refused := do(t, http.MethodGet, base+"/me", "", "", nil)
	if refused.Status != http.StatusUnauthorized || refused.Header.Get("WWW-Authenticate") != `Bearer realm="downstream"` {
		t.Errorf("/me without a token: %d %q", refused.Status, refused.Header.Get("WWW-Authenticate"))
	}
}
