package verify

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

const (
	testAppID   = "wx1234567890abcdef"
	issuerTTL   = time.Minute // the max-age the test issuer declares
	testMinRef  = 5 * time.Second
	testBackoff = 40 * time.Second
	testStale   = 10 * time.Minute
)

// Issuer modes.
const (
	up        = iota
	status500 // answers the JWKS with 500
	closing   // closes the connection without an answer
	hanging   // holds the request until released, then 500
)

// fakeClock is a verifier's clock the test moves, so expiry and backoff
// are shown without sleeping.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// issuer is a real loopback issuer (discovery and JWKS) that a test can
// take down; it counts the JWKS requests it receives.
type issuer struct {
	srv      *httptest.Server
	mode     atomic.Int32
	jwksHits atomic.Int32
	// entered receives once per JWKS request held in the hanging mode;
	// release lets them all go.
	entered     chan struct{}
	release     chan struct{}
	releaseOnce sync.Once

	mu   sync.Mutex
	keys map[string]*ecdsa.PrivateKey
	kids []string
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	is := &issuer{keys: map[string]*ecdsa.PrivateKey{}, entered: make(chan struct{}, 64), release: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": is.srv.URL, "jwks_uri": is.srv.URL + "/jwks"})
	})
	mux.HandleFunc("GET /jwks", is.serveJWKS)
	// Without keep-alive every fetch is one request on a fresh connection:
	// net/http retries a GET once when a reused connection closes, which
	// would make a closed connection count twice.
	is.srv = httptest.NewUnstartedServer(mux)
	is.srv.Config.SetKeepAlivesEnabled(false)
	is.srv.Start()
	t.Cleanup(is.srv.Close)
	t.Cleanup(is.unblock) // runs first: Close waits for held handlers
	return is
}

func (is *issuer) unblock() { is.releaseOnce.Do(func() { close(is.release) }) }

func (is *issuer) serveJWKS(w http.ResponseWriter, r *http.Request) {
	is.jwksHits.Add(1)
	switch is.mode.Load() {
	case status500:
		w.WriteHeader(http.StatusInternalServerError)
		return
	case closing:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
		return
	case hanging:
		is.entered <- struct{}{}
		<-is.release
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	is.mu.Lock()
	var doc jwkset.JWKSMarshal
	for _, kid := range is.kids {
		jwk, err := jwkset.NewJWKFromKey(&is.keys[kid].PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{ALG: jwkset.AlgES256, KID: kid, USE: jwkset.UseSig}})
		if err != nil {
			is.mu.Unlock()
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		doc.Keys = append(doc.Keys, jwk.Marshal())
	}
	is.mu.Unlock()
	w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(issuerTTL.Seconds())))
	_ = json.NewEncoder(w).Encode(doc)
}

func (is *issuer) hits() int { return int(is.jwksHits.Load()) }

// addKey publishes a new ES256 key.
func (is *issuer) addKey(t *testing.T, kid string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.keys[kid] = k
	is.kids = append(is.kids, kid)
}

// token signs a wxtoken-shaped access token with kid, valid for a day
// from now.
func (is *issuer) token(t *testing.T, kid string, now time.Time) string {
	t.Helper()
	is.mu.Lock()
	k := is.keys[kid]
	is.mu.Unlock()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, wireClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: is.srv.URL, Subject: "openid-1", Audience: jwt.ClaimStrings{testAppID}, ID: "jti-" + kid,
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(24 * time.Hour)),
		},
		ClientID: testAppID,
	})
	tok.Header["kid"] = kid
	tok.Header["typ"] = TokenType
	s, err := tok.SignedString(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newTestVerifier builds a verifier of is with a fake clock.
func newTestVerifier(t *testing.T, is *issuer) (*Verifier, *fakeClock) {
	t.Helper()
	clock := &fakeClock{now: time.Now()}
	v, err := New(context.Background(), Config{
		Issuer: is.srv.URL, AppIDs: []string{testAppID}, Now: clock.Now,
		MinRefresh: testMinRef, MaxBackoff: testBackoff, StaleIfError: testStale,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v, clock
}

// settle waits for the fetch running in the background, if any, to end
// and record its outcome.
func settle(v *Verifier) {
	v.keys.mu.Lock()
	f := v.keys.inflight
	v.keys.mu.Unlock()
	if f != nil {
		<-f.done
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// garbage are tokens refused from their text alone: none may cause a key
// lookup or fetch.
func garbage(good string) map[string]string {
	hdr := func(h string) string { return b64(h) + "." + b64(`{"sub":"x"}`) + "." + b64("sig") }
	return map[string]string{
		"empty":              "",
		"one part":           "abc",
		"two parts":          "a.b",
		"four parts":         good + ".x",
		"not base64url":      "!!!." + b64("{}") + "." + b64("sig"),
		"padded base64":      b64(`{"alg":"ES256","kid":"k1","typ":"at+jwt"}`) + "=." + b64("{}") + "." + b64("sig"),
		"header not JSON":    hdr("nope"),
		"header not object":  hdr(`["alg"]`),
		"no kid":             hdr(`{"alg":"ES256","typ":"at+jwt"}`),
		"empty kid":          hdr(`{"alg":"ES256","kid":"","typ":"at+jwt"}`),
		"typ JWT":            hdr(`{"alg":"ES256","kid":"k1","typ":"JWT"}`),
		"alg HS256":          hdr(`{"alg":"HS256","kid":"k1","typ":"at+jwt"}`),
		"alg none":           b64(`{"alg":"none","kid":"k1","typ":"at+jwt"}`) + "." + b64(`{"sub":"x"}`) + ".",
		"jku header":         hdr(`{"alg":"ES256","kid":"k1","typ":"at+jwt","jku":"https://evil.example/jwks"}`),
		"payload not JSON":   b64(`{"alg":"ES256","kid":"k1","typ":"at+jwt"}`) + "." + b64("nope") + "." + b64("sig"),
		"unsupported alg PS": hdr(`{"alg":"PS256","kid":"k1","typ":"at+jwt"}`),
	}
}

// forged has a well-formed header with a kid the issuer never published:
// it reaches the key lookup, whose refetch is rate-limited and backs off.
func forged() string {
	return b64(`{"alg":"ES256","kid":"forged","typ":"at+jwt"}`) + "." + b64(`{"sub":"x"}`) + "." + b64("sig")
}

// TestGarbageNeverFetches: with the cache expired, malformed tokens are
// refused as invalid without one request to the issuer, sequentially and
// concurrently.
func TestGarbageNeverFetches(t *testing.T) {
	is := newIssuer(t)
	is.addKey(t, "k1")
	v, clock := newTestVerifier(t, is)
	good := is.token(t, "k1", clock.Now())
	before := is.hits()
	// An accepted alg no published key has is refused from the cached set.
	rs := b64(`{"alg":"RS256","kid":"k1","typ":"at+jwt"}`) + "." + b64(`{"sub":"x"}`) + "." + b64("sig")
	if _, err := v.Verify(context.Background(), rs); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("alg RS256, only ES256 published: %v, want ErrInvalidToken", err)
	}
	clock.Advance(issuerTTL + testStale + time.Hour) // expired, and past any stale use
	for name, tok := range garbage(good) {
		if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: %v, want ErrInvalidToken", name, err)
		}
	}
	var wg sync.WaitGroup
	for range 10 {
		for _, tok := range garbage(good) {
			wg.Go(func() {
				if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrInvalidToken) {
					t.Errorf("concurrent garbage: %v, want ErrInvalidToken", err)
				}
			})
		}
	}
	wg.Wait()
	if n := is.hits() - before; n != 0 {
		t.Errorf("garbage tokens made %d JWKS fetches, want 0", n)
	}
}

// TestIssuerDown: while the issuer fails (500 or a closed connection), the
// verifier fetches once when the set expires, then only once per backoff
// (doubling from MinRefresh up to MaxBackoff) however many requests come,
// keeps verifying good tokens from the stale set within StaleIfError,
// answers ErrKeysUnavailable past it without waiting, and refreshes once
// the backoff passes after the issuer is back.
func TestIssuerDown(t *testing.T) {
	for _, mode := range []struct {
		name string
		mode int32
	}{{"500", status500}, {"closed connection", closing}} {
		t.Run(mode.name, func(t *testing.T) {
			ctx := context.Background()
			is := newIssuer(t)
			is.addKey(t, "k1")
			v, clock := newTestVerifier(t, is)
			good := is.token(t, "k1", clock.Now())
			bad := forged()
			if is.hits() != 1 {
				t.Fatalf("New made %d JWKS fetches, want 1", is.hits())
			}
			mustVerify := func(what string) {
				t.Helper()
				if _, err := v.Verify(ctx, good); err != nil {
					t.Fatalf("%s: a good token: %v", what, err)
				}
			}
			// burst sends n good, forged and garbage tokens one after the
			// other, then as many at once; good ones must verify.
			burst := func(what string, n int) {
				t.Helper()
				for range n {
					mustVerify(what)
					if _, err := v.Verify(ctx, bad); !errors.Is(err, ErrInvalidToken) {
						t.Fatalf("%s: forged kid: %v, want ErrInvalidToken", what, err)
					}
					for _, g := range garbage(good) {
						if _, err := v.Verify(ctx, g); !errors.Is(err, ErrInvalidToken) {
							t.Fatalf("%s: garbage: %v, want ErrInvalidToken", what, err)
						}
					}
				}
				var wg sync.WaitGroup
				for range n {
					wg.Go(func() {
						if _, err := v.Verify(ctx, good); err != nil {
							t.Errorf("%s, concurrent: a good token: %v", what, err)
						}
					})
					wg.Go(func() {
						if _, err := v.Verify(ctx, bad); !errors.Is(err, ErrInvalidToken) {
							t.Errorf("%s, concurrent: forged kid: %v", what, err)
						}
					})
				}
				wg.Wait()
				settle(v)
			}
			expectHits := func(what string, want int) {
				t.Helper()
				if got := is.hits(); got != want {
					t.Fatalf("%s: %d JWKS fetches, want %d", what, got, want)
				}
			}

			is.mode.Store(mode.mode)
			clock.Advance(issuerTTL + time.Second)
			burst("expired, issuer down", 50)
			expectHits("expired, issuer down", 2) // New's, then one failed refresh

			// Each failure doubles the wait, up to MaxBackoff; within it no
			// request fetches, at its end exactly one does.
			hits := 2
			for n, wait := range []time.Duration{5, 10, 20, 40, 40, 40} {
				wait *= time.Second
				clock.Advance(wait - time.Second)
				burst(fmt.Sprintf("backoff %d, 1 s before its end", n+1), 10)
				expectHits(fmt.Sprintf("backoff %d, 1 s before its end", n+1), hits)
				clock.Advance(time.Second)
				burst(fmt.Sprintf("backoff %d, at its end", n+1), 10)
				hits++
				expectHits(fmt.Sprintf("backoff %d, at its end", n+1), hits)
			}

			// Past StaleIfError the set is not used: one fetch after the
			// backoff (waited for, it is all there is), then none.
			clock.Advance(issuerTTL + testStale)
			if _, err := v.Verify(ctx, good); !errors.Is(err, ErrKeysUnavailable) {
				t.Fatalf("past StaleIfError: %v, want ErrKeysUnavailable", err)
			}
			hits++
			for range 20 {
				if _, err := v.Verify(ctx, good); !errors.Is(err, ErrKeysUnavailable) {
					t.Fatalf("past StaleIfError, backing off: %v, want ErrKeysUnavailable", err)
				}
			}
			expectHits("past StaleIfError", hits)

			// The issuer is back with one more key: nothing is fetched until
			// the backoff ends, then the new set is used.
			is.addKey(t, "k2")
			newer := is.token(t, "k2", clock.Now())
			is.mode.Store(up)
			clock.Advance(testBackoff - time.Second)
			if _, err := v.Verify(ctx, good); !errors.Is(err, ErrKeysUnavailable) {
				t.Fatalf("issuer back, within the backoff: %v, want ErrKeysUnavailable", err)
			}
			expectHits("issuer back, within the backoff", hits)
			clock.Advance(time.Second)
			mustVerify("issuer back, after the backoff")
			hits++
			if _, err := v.Verify(ctx, newer); err != nil {
				t.Fatalf("a token of the newly published key: %v", err)
			}
			// Fresh again, so a forged kid may cost its one rate-limited
			// refetch (per UnknownKIDInterval), no more.
			burst("refreshed", 10)
			expectHits("refreshed", hits+1)
		})
	}
}

// TestRecoversWithinStaleIfError: when the issuer comes back while the
// stale set is in use, the retry after the backoff runs in the background
// and brings the new set; the backoff then starts over.
func TestRecoversWithinStaleIfError(t *testing.T) {
	ctx := context.Background()
	is := newIssuer(t)
	is.addKey(t, "k1")
	v, clock := newTestVerifier(t, is)
	good := is.token(t, "k1", clock.Now())

	is.mode.Store(status500)
	clock.Advance(issuerTTL + time.Second)
	if _, err := v.Verify(ctx, good); err != nil {
		t.Fatalf("stale set: %v", err)
	}
	is.addKey(t, "k2")
	is.mode.Store(up)
	clock.Advance(testMinRef)
	if _, err := v.Verify(ctx, good); err != nil {
		t.Fatalf("after the backoff: %v", err)
	}
	settle(v)
	if is.hits() != 3 {
		t.Fatalf("%d JWKS fetches, want 3", is.hits())
	}
	if _, err := v.Verify(ctx, is.token(t, "k2", clock.Now())); err != nil {
		t.Fatalf("the refreshed set lacks the new key: %v", err)
	}
	if is.hits() != 3 {
		t.Fatalf("the new key cost a fetch: %d, want 3", is.hits())
	}

	// Down again at the next expiry: the first failure is waited for, and
	// the backoff is MinRefresh again, not where it stopped.
	is.mode.Store(status500)
	clock.Advance(issuerTTL)
	if _, err := v.Verify(ctx, good); err != nil {
		t.Fatalf("stale again: %v", err)
	}
	clock.Advance(testMinRef)
	if _, err := v.Verify(ctx, good); err != nil {
		t.Fatal(err)
	}
	settle(v)
	if is.hits() != 5 {
		t.Fatalf("%d JWKS fetches, want 5 (the backoff did not restart at MinRefresh)", is.hits())
	}
}

// TestStaleServedWithoutWaiting: once a refresh failed, a retry that hangs
// holds no request: each returns from the stale set while the issuer still
// holds the one fetch.
func TestStaleServedWithoutWaiting(t *testing.T) {
	ctx := context.Background()
	is := newIssuer(t)
	is.addKey(t, "k1")
	v, clock := newTestVerifier(t, is)
	good := is.token(t, "k1", clock.Now())

	is.mode.Store(status500)
	clock.Advance(issuerTTL + time.Second)
	if _, err := v.Verify(ctx, good); err != nil {
		t.Fatalf("stale set: %v", err)
	}
	is.mode.Store(hanging)
	clock.Advance(testMinRef)
	if _, err := v.Verify(ctx, good); err != nil {
		t.Fatalf("stale set, retry hanging: %v", err)
	}
	<-is.entered // the retry reached the issuer and is held there
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if _, err := v.Verify(ctx, good); err != nil {
				t.Errorf("stale set, retry hanging, concurrent: %v", err)
			}
		})
	}
	wg.Wait()
	if _, err := v.Verify(ctx, forged()); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("forged kid: %v", err)
	}
	// Every request above returned while the issuer still held the fetch.
	v.keys.mu.Lock()
	holding := v.keys.inflight != nil
	v.keys.mu.Unlock()
	if !holding || is.hits() != 3 {
		t.Fatalf("fetch held: %v, JWKS requests %d; want the one held retry (3)", holding, is.hits())
	}
	is.unblock()
	settle(v)
}

// TestJWKSURIScheme: an https issuer's jwks_uri must be https (another host
// is fine), and a fetch may not be redirected off https; an http issuer
// (a test or a private network) may use either.
func TestJWKSURIScheme(t *testing.T) {
	var plainHits atomic.Int32
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plainHits.Add(1)
		http.Error(w, "plain", http.StatusInternalServerError)
	}))
	defer plain.Close()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwk, err := jwkset.NewJWKFromKey(&k.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{ALG: jwkset.AlgES256, KID: "k1", USE: jwkset.UseSig}})
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{jwk.Marshal()}})
	keysHost := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(jwks) }))
	defer keysHost.Close()

	tests := []struct {
		name     string
		jwksURI  func(issuerURL string) string
		wantErr  error // nil: New succeeds
		anyError bool
	}{
		{"https, another host", func(string) string { return keysHost.URL + "/jwks" }, nil, false},
		{"https, same host", func(u string) string { return u + "/jwks" }, nil, false},
		{"http", func(string) string { return plain.URL + "/jwks" }, ErrInsecureJWKSURI, true},
		{"redirect to http", func(u string) string { return u + "/redirect" }, ErrInsecureJWKSURI, true},
		{"relative", func(string) string { return "/jwks" }, nil, true},
		{"other scheme", func(string) string { return "ftp://keys.example/jwks" }, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var srv *httptest.Server
			srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/.well-known/openid-configuration":
					_ = json.NewEncoder(w).Encode(map[string]string{"issuer": srv.URL, "jwks_uri": tc.jwksURI(srv.URL)})
				case "/jwks":
					_, _ = w.Write(jwks)
				case "/redirect":
					http.Redirect(w, r, plain.URL+"/jwks", http.StatusFound)
				}
			}))
			defer srv.Close()
			before := plainHits.Load()
			_, err := New(context.Background(), Config{Issuer: srv.URL, AppIDs: []string{testAppID}, Client: srv.Client()})
			switch {
			case !tc.anyError && err != nil:
				t.Fatalf("New: %v", err)
			case tc.anyError && err == nil:
				t.Fatal("New accepted it")
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("New: %v, want %v", err, tc.wantErr)
			}
			if n := plainHits.Load() - before; n != 0 {
				t.Errorf("%d requests reached the plain-http server", n)
			}
		})
	}

	// An http issuer may name an http jwks_uri.
	is := newIssuer(t)
	is.addKey(t, "k1")
	if _, err := New(context.Background(), Config{Issuer: is.srv.URL, AppIDs: []string{testAppID}}); err != nil {
		t.Fatalf("http issuer, http jwks_uri: %v", err)
	}
}

func TestBackoff(t *testing.T) {
	const huge = time.Duration(1<<63 - 1)
	tests := []struct {
		name     string
		min, cap time.Duration
		failures int
		want     time.Duration
	}{
		{"first", 5 * time.Second, time.Minute, 1, 5 * time.Second},
		{"doubles", 5 * time.Second, time.Minute, 3, 20 * time.Second},
		{"capped", 5 * time.Second, time.Minute, 5, time.Minute},
		{"many failures", 5 * time.Second, time.Minute, 1 << 20, time.Minute},
		{"cap below MinRefresh", 5 * time.Second, time.Second, 3, 5 * time.Second},
		{"huge cap, no overflow", time.Second, huge, 200, huge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &remoteKeys{cfg: Config{MinRefresh: tc.min, MaxBackoff: tc.cap}}
			if got := r.backoff(tc.failures); got != tc.want {
				t.Errorf("backoff(%d) = %v, want %v", tc.failures, got, tc.want)
			}
		})
	}
}
