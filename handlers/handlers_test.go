package handlers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/emulator"
	"github.com/wxtoken/wxtoken/handlers"
	"github.com/wxtoken/wxtoken/internal/syncbuf"
	"github.com/wxtoken/wxtoken/internal/wxtest"
	"github.com/wxtoken/wxtoken/keys"
	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/token"
	"github.com/wxtoken/wxtoken/wechat"
)

const (
	appA    = "wxaaaaaaaaaaaaaaaa"
	appB    = "wxbbbbbbbbbbbbbbbb"
	secretA = "secret-a-0123456789abcdef0123456"
	secretB = "secret-b-0123456789abcdef0123456"
)

// apps serves the listed mini programs; the first is the default.
type apps []wechat.Credentials

func (a apps) Lookup(appid string) (wechat.Credentials, bool) {
	for _, c := range a {
		if c.AppID == appid {
			return c, true
		}
	}
	return wechat.Credentials{}, false
}

func (a apps) Default() string { return a[0].AppID }

func (a apps) Policy(string) handlers.AppPolicy { return handlers.AppPolicy{} }

// fixture is the handlers wired to real parts: a real key directory, the real
// token service and WeChat client, and the WeChat emulator on loopback.
type fixture struct {
	srv    *httptest.Server
	wx     *emulator.Emulator
	tokens *token.Service
	logs   *syncbuf.Buffer
	dir    *keys.Dir
	store  *keys.Store
	wxURL  string
}

type options struct {
	served         apps // defaults to both apps
	dev            bool
	loginRate      float64 // burst 2
	userRate       float64 // burst 2
	authFailRate   float64 // burst 3
	trusted        []*net.IPNet
	requestTimeout time.Duration
	wechatTimeout  time.Duration    // the WeChat client's per-call timeout; 2 s if zero
	cacheEntries   int              // verified-token cache; 0 is off
	now            func() time.Time // the token service's and the handlers' clock; time.Now if nil
	observer       handlers.Observer
}

func newFixture(t testing.TB, o options) *fixture {
	t.Helper()
	logs := new(syncbuf.Buffer)
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	wx, wxURL := wxtest.MustEmulator(t, map[string]string{appA: secretA, appB: secretB})

	dir := keys.NewDir(filepath.Join(t.TempDir(), "keys"), 3*time.Hour, nil)
	if _, err := dir.Init(keys.ES256); err != nil {
		t.Fatal(err)
	}
	store, err := keys.NewStore(dir, logger)
	if err != nil {
		t.Fatal(err)
	}
	wechatTimeout := o.wechatTimeout
	if wechatTimeout == 0 {
		wechatTimeout = 2 * time.Second
	}
	client, err := wechat.NewClient(wechat.Config{BaseURL: wxURL, Timeout: wechatTimeout, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := token.New(token.Config{Issuer: "https://wxtoken.test", TTL: time.Hour, Leeway: 30 * time.Second,
		Audiences: []string{appA, appB}, Keys: store, CacheEntries: o.cacheEntries, Now: o.now})
	if err != nil {
		t.Fatal(err)
	}
	served := o.served
	if served == nil {
		served = apps{{AppID: appA, Secret: secretA}, {AppID: appB, Secret: secretB}}
	}
	e, err := handlers.New(handlers.Config{
		Logger: logger, WeChat: client, Tokens: tokens, Apps: served,
		JWKS:           func() ([]byte, string) { return store.Current().JWKS() },
		OpenAPI:        []byte("openapi: 3.1.0\n"),
		Dev:            o.dev,
		LoginRate:      o.loginRate,
		LoginBurst:     2,
		UserRate:       o.userRate,
		UserBurst:      2,
		AuthFailRate:   o.authFailRate,
		AuthFailBurst:  3,
		TrustedProxies: o.trusted,
		RequestTimeout: o.requestTimeout,
		JWKSMaxAge:     5 * time.Minute,
		Observer:       o.observer,
		Now:            o.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, wx: wx, tokens: tokens, logs: logs, dir: dir, store: store, wxURL: wxURL}
}

// answer is one exchange read whole (wxtest.Answer under the short field
// names these tests use).
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) json(t testing.TB) map[string]any {
	t.Helper()
	return wxtest.Answer{Status: a.status, Header: a.header, Body: a.body}.JSON(t)
}

func answerOf(a wxtest.Answer) answer { return answer{a.Status, a.Header, a.Body} }

// send makes one request with these headers and reads the whole answer.
func (f *fixture) send(t testing.TB, method, path string, body io.Reader, header map[string]string) answer {
	t.Helper()
	return answerOf(wxtest.Send(t, method, f.srv.URL+path, body, header))
}

func (f *fixture) do(t testing.TB, method, path, bearer, contentType, body string) answer {
	t.Helper()
	return answerOf(wxtest.Do(t, method, f.srv.URL+path, bearer, contentType, []byte(body)))
}

func (f *fixture) post(t testing.TB, path, bearer, body string) answer {
	t.Helper()
	return f.do(t, http.MethodPost, path, bearer, "application/json", body)
}

// login answers a token for a fresh user of appid.
func (f *fixture) login(t testing.TB, appid, code string) string {
	t.Helper()
	tok, _ := wxtest.Login(t, f.srv.URL, appid, code)
	return tok
}

// wantProblem checks that a is problem+json of the given type and status,
// and that the type is catalogued with that status.
func wantProblem(t testing.TB, a answer, status int, slug string) map[string]any {
	t.Helper()
	if handlers.ProblemTypePrefix != wxtest.ProblemTypePrefix {
		t.Fatalf("problem types start %q, wxtest expects %q", handlers.ProblemTypePrefix, wxtest.ProblemTypePrefix)
	}
	p := wxtest.WantProblem(t, wxtest.Answer{Status: a.status, Header: a.header, Body: a.body}, status, slug)
	if got := handlers.Kinds()[handlers.ProblemTypePrefix+slug]; got != status {
		t.Fatalf("type %s is catalogued with status %d, answered %d", slug, got, status)
	}
	return p
}

func TestLoginPicksTheAppPerRequest(t *testing.T) {
	f := newFixture(t, options{})
	for _, tc := range []struct {
		name, body, wantAud string
	}{
		{"default app", `{"code":"c1"}`, appA},
		{"named app", `{"code":"c2","appid":"` + appB + `"}`, appB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := f.post(t, "/v1/login", "", tc.body)
			if a.status != http.StatusOK {
				t.Fatalf("%d %s", a.status, a.body)
			}
			if a.header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", a.header.Get("Cache-Control"))
			}
			body := a.json(t)
			sess, err := f.tokens.Verify(t.Context(), body["access_token"].(string))
			if err != nil {
				t.Fatal(err)
			}
			if sess.AppID != tc.wantAud || sess.OpenID != body["openid"] || sess.UnionID != body["unionid"] {
				t.Fatalf("token says app %s user %s/%s; answer says %v/%v", sess.AppID, sess.OpenID, sess.UnionID, body["openid"], body["unionid"])
			}
			if bytes.Contains(a.body, []byte(sess.SessionKey.Reveal())) {
				t.Fatal("the login answer carries the session_key")
			}
		})
	}
	wantProblem(t, f.post(t, "/v1/login", "", `{"code":"c3","appid":"wxnotservedhere00"}`), 400, "unknown-app")
}

// TestBearerRefusesTokensOfAppsNoLongerServed: a token signed by our own key
// for an app that was taken out of the deployment gets 401 on every route,
// and WeChat is never asked.
func TestBearerRefusesTokensOfAppsNoLongerServed(t *testing.T) {
	f := newFixture(t, options{dev: true})
	tokB := f.login(t, appB, "user-b")
	if _, err := f.tokens.Verify(t.Context(), tokB); err != nil {
		t.Fatalf("the token itself is good: %v", err)
	}
	// The same keys and token service; the deployment now serves only app A.
	e, err := handlers.New(handlers.Config{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), WeChat: unusedWeChat{t}, Tokens: f.tokens,
		Apps: apps{{AppID: appA, Secret: secretA}}, JWKS: func() ([]byte, string) { return nil, "" }, Dev: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	onlyA := &fixture{srv: httptest.NewServer(e)}
	defer onlyA.srv.Close()
	for _, path := range []string{"/v1/decrypt", "/v1/userinfo", "/v1/phone-number", "/v1/session/check", "/dev/encrypt"} {
		t.Run(path, func(t *testing.T) {
			a := onlyA.post(t, path, tokB, `{"code":"x","encryptedData":"AAAAAAAAAAAAAAAAAAAAAA==","iv":"AAAAAAAAAAAAAAAAAAAAAA==","rawData":"{}","signature":"00"}`)
			wantProblem(t, a, 401, "invalid-token")
			if !strings.Contains(a.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
				t.Fatalf("WWW-Authenticate %q", a.header.Get("WWW-Authenticate"))
			}
		})
	}
}

// unusedWeChat fails the test if a handler reaches WeChat.
type unusedWeChat struct{ t *testing.T }

func (u unusedWeChat) Code2Session(_ context.Context, _ wechat.Credentials, _ string) (wechat.Session, error) {
	u.t.Error("WeChat was called")
	return wechat.Session{}, io.EOF
}

func (u unusedWeChat) PhoneNumber(context.Context, wechat.Credentials, string, string) (wechat.PhoneInfo, error) {
	u.t.Error("WeChat was called")
	return wechat.PhoneInfo{}, io.EOF
}

func (u unusedWeChat) CheckSession(context.Context, wechat.Credentials, string, secret.String) (bool, error) {
	u.t.Error("WeChat was called")
	return false, io.EOF
}

func (u unusedWeChat) ResetSessionKey(context.Context, wechat.Credentials, string, secret.String) (secret.String, error) {
	u.t.Error("WeChat was called")
	return "", io.EOF
}

func (u unusedWeChat) UserRiskRank(context.Context, wechat.Credentials, string, string) (int, error) {
	u.t.Error("WeChat was called")
	return 0, io.EOF
}

// TestBearerChallenges: RFC 6750 section 3 — a bare challenge when no
// credentials came, error="invalid_token" when bad ones did; a good token
// is taken whatever the case of its scheme.
func TestBearerChallenges(t *testing.T) {
	f := newFixture(t, options{})
	good := f.login(t, appA, "bearer-rules")
	parts := strings.Split(good, ".")
	sig := []byte(parts[2])
	sig[5] ^= 1
	tampered := parts[0] + "." + parts[1] + "." + string(sig)
	for _, tc := range []struct {
		name, authorization string
		status              int
		invalidToken        bool
	}{
		{"none", "", 401, false},
		{"basic scheme", "Basic dXNlcjpwYXNz", 401, false},
		{"bearer without token", "Bearer ", 401, true},
		{"not a b64token", "Bearer abc def", 401, true},
		{"garbage", "Bearer abc.def.ghi", 401, true},
		{"not a JWT", "Bearer not-a-jwt", 401, true},
		{"lower-case scheme, garbage", "bearer abc.def.ghi", 401, true},
		{"bad signature", "Bearer " + tampered, 401, true},
		{"good", "Bearer " + good, 200, false},
		{"lower-case scheme, good", "bearer " + good, 200, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			header := map[string]string{}
			if tc.authorization != "" {
				header["Authorization"] = tc.authorization
			}
			a := f.send(t, http.MethodPost, "/v1/session/check", nil, header)
			if tc.status == 200 {
				if a.status != 200 || a.header.Get("WWW-Authenticate") != "" {
					t.Fatalf("%d %q %s", a.status, a.header.Get("WWW-Authenticate"), a.body)
				}
				return
			}
			slug := "unauthorized"
			if tc.invalidToken {
				slug = "invalid-token"
			}
			wantProblem(t, a, 401, slug)
			challenge := a.header.Get("WWW-Authenticate")
			if !strings.HasPrefix(challenge, "Bearer ") || !strings.Contains(challenge, `realm="wxtoken"`) {
				t.Fatalf("WWW-Authenticate %q", challenge)
			}
			if got := strings.Contains(challenge, `error="invalid_token"`); got != tc.invalidToken {
				t.Fatalf("WWW-Authenticate %q: invalid_token %v, want %v", challenge, got, tc.invalidToken)
			}
			if !tc.invalidToken && strings.Contains(challenge, "error=") {
				t.Fatalf("a request without a token must get a bare challenge: %q", challenge)
			}
		})
	}
}

func TestRequestShapeProblems(t *testing.T) {
	f := newFixture(t, options{})
	for _, tc := range []struct {
		name, method, path, contentType, body string
		status                                int
		slug, detailHas                       string
	}{
		{"missing code", "POST", "/v1/login", "application/json", `{}`, 400, "invalid-request", `"code" is required`},
		{"empty code", "POST", "/v1/login", "application/json", `{"code":""}`, 400, "invalid-request", `"code" is required`},
		{"code not a string", "POST", "/v1/login", "application/json", `{"code":5}`, 400, "invalid-request", `"code" must be a JSON string`},
		{"code with a newline", "POST", "/v1/login", "application/json", `{"code":"a\nb"}`, 400, "invalid-request", "printable ASCII"},
		{"code too long", "POST", "/v1/login", "application/json", `{"code":"` + strings.Repeat("a", 257) + `"}`, 400, "invalid-request", "at most 256"},
		{"syntax error", "POST", "/v1/login", "application/json", `{"code":`, 400, "invalid-request", "ends too early"},
		{"two values", "POST", "/v1/login", "application/json", `{"code":"a"} {"code":"b"}`, 400, "invalid-request", "more than one JSON value"},
		{"garbage after", "POST", "/v1/login", "application/json", `{"code":"a"} x`, 400, "invalid-request", "more than one JSON value"},
		{"bad byte", "POST", "/v1/login", "application/json", `{"code":"a",}`, 400, "invalid-request", "syntax error at byte"},
		{"closing bracket after", "POST", "/v1/login", "application/json", `{"code":"a"}]`, 400, "invalid-request", "not valid JSON"},
		{"two values", "POST", "/v1/login", "application/json", `{"code":"a"}{"code":"b"}`, 400, "invalid-request", "more than one"},
		{"array", "POST", "/v1/login", "application/json", `["a"]`, 400, "invalid-request", "JSON object"},
		{"empty body", "POST", "/v1/login", "application/json", ``, 400, "invalid-request", "empty"},
		{"form body", "POST", "/v1/login", "application/x-www-form-urlencoded", `code=abc`, 415, "unsupported-media-type", "application/json"},
		{"too large", "POST", "/v1/login", "application/json", `{"code":"a","x":"` + strings.Repeat("a", 65<<10) + `"}`, 413, "request-too-large", "65536"},
		{"unknown route", "GET", "/v1/nope", "", ``, 404, "not-found", "No such route"},
		{"wrong method", "GET", "/v1/login", "", ``, 405, "method-not-allowed", "method"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := f.do(t, tc.method, tc.path, "", tc.contentType, tc.body)
			p := wantProblem(t, a, tc.status, tc.slug)
			if d, _ := p["detail"].(string); !strings.Contains(d, tc.detailHas) {
				t.Fatalf("detail %q does not say %q", d, tc.detailHas)
			}
		})
	}
	if n := f.wx.Calls("/sns/jscode2session"); n != 0 {
		t.Fatalf("malformed logins reached WeChat %d times", n)
	}
}

// TestWeChatErrcodesMapped drives every errcode the core issue names through
// the emulator (a code "err-<n>" answers errcode n).
func TestWeChatErrcodesMapped(t *testing.T) {
	f := newFixture(t, options{})
	for _, tc := range []struct {
		errcode    string
		status     int
		slug       string
		retryAfter bool
	}{
		{"40029", 400, "invalid-code", false},
		{"40163", 400, "invalid-code", false},
		{"40226", 403, "login-blocked", false},
		{"45011", 429, "wechat-rate-limited", true},
		{"-1", 503, "wechat-busy", true},
		{"40013", 502, "wechat-error", false},
	} {
		t.Run(tc.errcode, func(t *testing.T) {
			a := f.post(t, "/v1/login", "", `{"code":"err-`+tc.errcode+`"}`)
			p := wantProblem(t, a, tc.status, tc.slug)
			if got := a.header.Get("Retry-After") != ""; got != tc.retryAfter {
				t.Fatalf("Retry-After %q, want one: %v", a.header.Get("Retry-After"), tc.retryAfter)
			}
			if got, _ := p["errcode"].(float64); strconv.Itoa(int(got)) != tc.errcode {
				t.Fatalf("errcode %v, want %s", p["errcode"], tc.errcode)
			}
			if d, _ := p["detail"].(string); !strings.Contains(d, tc.errcode) {
				t.Fatalf("detail %q does not name errcode %s", d, tc.errcode)
			}
		})
	}
}

// TestWeChatFailuresMapped: WeChat failing at the HTTP level (an error
// status, an answer that is not JSON, a reset, no answer within the
// client's timeout) is a 502 or 504 problem with Retry-After.
func TestWeChatFailuresMapped(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{wechatTimeout: 300 * time.Millisecond})
	for _, tc := range []struct {
		name   string
		fault  emulator.Fault
		status int
		slug   string
	}{
		{"http 500", emulator.Fault{HTTPStatus: 500, Times: 1}, 502, "wechat-error"},
		{"not json", emulator.Fault{Garbage: true, Times: 1}, 502, "wechat-error"},
		{"connection reset", emulator.Fault{Reset: true, Times: 1}, 502, "wechat-error"},
		{"hangs", emulator.Fault{Hang: 3 * time.Second, Times: 1}, 504, "wechat-timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.wx.SetFault("/sns/jscode2session", tc.fault)
			defer f.wx.SetFault("/sns/jscode2session", emulator.Fault{})
			a := f.post(t, "/v1/login", "", `{"code":"fault-`+strings.ReplaceAll(tc.name, " ", "-")+`"}`)
			wantProblem(t, a, tc.status, tc.slug)
			if a.header.Get("Retry-After") == "" {
				t.Error("no Retry-After")
			}
		})
	}
}

func TestLoginRateLimit(t *testing.T) {
	f := newFixture(t, options{loginRate: 0.5}) // burst 2
	for i := range 2 {
		if a := f.post(t, "/v1/login", "", `{"code":"burst-`+string(rune('a'+i))+`"}`); a.status != 200 {
			t.Fatalf("login %d within the burst: %d %s", i, a.status, a.body)
		}
	}
	a := f.post(t, "/v1/login", "", `{"code":"over"}`)
	wantProblem(t, a, 429, "rate-limited")
	if a.header.Get("Retry-After") != "2" {
		t.Fatalf("Retry-After %q, want 2 (one token every 2 s)", a.header.Get("Retry-After"))
	}
	if n := f.wx.Calls("/sns/jscode2session"); n != 2 {
		t.Fatalf("WeChat saw %d logins, want 2: the limited one must not reach it", n)
	}
	// Other routes are not limited.
	if a := f.do(t, "GET", "/.well-known/jwks.json", "", "", ""); a.status != 200 {
		t.Fatalf("jwks while logins are limited: %d", a.status)
	}
}

func TestJWKSConditionalGet(t *testing.T) {
	f := newFixture(t, options{})
	a := f.do(t, "GET", "/.well-known/jwks.json", "", "", "")
	if a.status != 200 || a.header.Get("Content-Type") != "application/jwk-set+json" {
		t.Fatalf("%d %q", a.status, a.header.Get("Content-Type"))
	}
	if cc := a.header.Get("Cache-Control"); cc != "public, max-age=300" {
		t.Fatalf("Cache-Control %q", cc)
	}
	etag := a.header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	for _, tc := range []struct {
		ifNoneMatch string
		want        int
	}{
		{etag, 304},
		{"W/" + etag, 304},
		{`"other", ` + etag, 304},
		{"*", 304},
		{`"other"`, 200},
	} {
		a := f.send(t, http.MethodGet, "/.well-known/jwks.json", nil, map[string]string{"If-None-Match": tc.ifNoneMatch})
		if a.status != tc.want {
			t.Errorf("If-None-Match %s: %d, want %d", tc.ifNoneMatch, a.status, tc.want)
		}
		if a.status == http.StatusNotModified && len(a.body) != 0 {
			t.Errorf("If-None-Match %s: 304 with a %d-byte body", tc.ifNoneMatch, len(a.body))
		}
	}
}

// TestUserDataRoutes runs decrypt, userinfo, phone number and session check
// for one user, with the dev-only encrypt route making the user data.
func TestUserDataRoutes(t *testing.T) {
	f := newFixture(t, options{dev: true})
	tok := f.login(t, appB, "user-data")

	enc := f.post(t, "/dev/encrypt", tok, `{"nickName":"Band","gender":1}`)
	if enc.status != 200 {
		t.Fatalf("dev encrypt: %d %s", enc.status, enc.body)
	}
	pair := enc.json(t)
	body, _ := json.Marshal(map[string]any{"encryptedData": pair["encryptedData"], "iv": pair["iv"]})
	dec := f.post(t, "/v1/decrypt", tok, string(body))
	if dec.status != 200 {
		t.Fatalf("decrypt: %d %s", dec.status, dec.body)
	}
	data, _ := dec.json(t)["data"].(map[string]any)
	if data["nickName"] != "Band" || data["watermark"].(map[string]any)["appid"] != appB {
		t.Fatalf("decrypted %s", dec.body)
	}

	sess, err := f.tokens.Verify(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	// /dev/encrypt answers what wx.getUserInfo gives: all four fields, so
	// its answer is a /v1/userinfo request as it stands.
	rawData, _ := pair["rawData"].(string)
	sig, _ := pair["signature"].(string)
	if rawData != `{"gender":1,"nickName":"Band"}` || sig != wxtest.Signature(rawData, sess.SessionKey.Reveal()) {
		t.Fatalf("dev encrypt rawData %q signature %q", rawData, sig)
	}
	if a := f.post(t, "/v1/userinfo", tok, string(enc.body)); a.status != 200 ||
		!bytes.Contains(a.body, []byte(`"profile":{"gender":1,"nickName":"Band"}`)) || !bytes.Contains(a.body, []byte(`"data":{`)) {
		t.Fatalf("userinfo: %d %s", a.status, a.body)
	}
	bad, _ := json.Marshal(map[string]any{"rawData": rawData, "signature": strings.Repeat("0", 40)})
	wantProblem(t, f.post(t, "/v1/userinfo", tok, string(bad)), 400, "invalid-signature")
	half, _ := json.Marshal(map[string]any{"rawData": rawData, "signature": sig, "iv": pair["iv"]})
	wantProblem(t, f.post(t, "/v1/userinfo", tok, string(half)), 400, "invalid-request")

	ph := f.post(t, "/v1/phone-number", tok, `{"code":"phone-1"}`)
	if ph.status != 200 || ph.json(t)["countryCode"] != "86" || len(ph.json(t)["purePhoneNumber"].(string)) != 11 {
		t.Fatalf("phone: %d %s", ph.status, ph.body)
	}
	if _, ok := ph.json(t)["watermark"]; ok {
		t.Fatalf("the phone answer carries WeChat's watermark: %s", ph.body)
	}
	p := wantProblem(t, f.post(t, "/v1/phone-number", tok, `{"code":"phone-1"}`), 400, "invalid-code")
	if !strings.Contains(p["detail"].(string), "getPhoneNumber") {
		t.Fatalf("a reused phone code's detail does not point at the getPhoneNumber button: %v", p["detail"])
	}

	// WeChat's answer must carry this app's watermark.
	f.wx.SetFault("/wxa/business/getuserphonenumber", emulator.Fault{Watermark: appA, Times: 1})
	wantProblem(t, f.post(t, "/v1/phone-number", tok, `{"code":"phone-2"}`), 400, "invalid-code")

	if a := f.post(t, "/v1/session/check", tok, ``); a.status != 200 || a.json(t)["valid"] != true {
		t.Fatalf("session check: %d %s", a.status, a.body)
	}
	// A second login of the same user replaces the session_key at WeChat.
	f.wx.PresetLogin("relogin", sess.OpenID, sess.UnionID, "AAAAAAAAAAAAAAAAAAAAAA==")
	f.login(t, appB, "relogin")
	if a := f.post(t, "/v1/session/check", tok, ``); a.status != 200 || a.json(t)["valid"] != false {
		t.Fatalf("session check after a new login: %d %s", a.status, a.body)
	}

	for _, leak := range []string{sess.SessionKey.Reveal(), "Band", ph.json(t)["phoneNumber"].(string), tok} {
		if strings.Contains(f.logs.String(), leak) {
			t.Fatalf("the logs carry %q", leak)
		}
	}
}

func TestDevRouteAbsentOutsideDevMode(t *testing.T) {
	f := newFixture(t, options{})
	tok := f.login(t, appA, "no-dev")
	wantProblem(t, f.post(t, "/dev/encrypt", tok, `{"a":1}`), 404, "not-found")
}

// TestUserRateLimit: the routes that spend WeChat calls are limited per user,
// so one free token cannot burn the app's quota; other users are unaffected.
func TestUserRateLimit(t *testing.T) {
	f := newFixture(t, options{userRate: 0.5}) // burst 2
	alice, bob := f.login(t, appA, "alice"), f.login(t, appA, "bob")
	for i := range 2 {
		if a := f.post(t, "/v1/session/check", alice, ``); a.status != 200 {
			t.Fatalf("check %d within the burst: %d %s", i, a.status, a.body)
		}
	}
	before := f.wx.Calls("/wxa/checksession")
	a := f.post(t, "/v1/session/check", alice, ``)
	wantProblem(t, a, 429, "rate-limited")
	if a.header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	wantProblem(t, f.post(t, "/v1/phone-number", alice, `{"code":"p"}`), 429, "rate-limited")
	if n := f.wx.Calls("/wxa/checksession") - before; n != 0 {
		t.Fatalf("limited calls reached WeChat %d times", n)
	}
	if a := f.post(t, "/v1/session/check", bob, ``); a.status != 200 {
		t.Fatalf("another user: %d %s", a.status, a.body)
	}
}

// TestLoginLimitKeysIPv6ByPrefix: an IPv6 client holds a /64, so all of it
// shares one bucket; IPv4 addresses keep one bucket each.
func TestLoginLimitKeysIPv6ByPrefix(t *testing.T) {
	_, loopback, _ := net.ParseCIDR("127.0.0.0/8")
	f := newFixture(t, options{loginRate: 0.01, trusted: []*net.IPNet{loopback}}) // burst 2
	from := func(ip, code string) answer {
		return f.send(t, http.MethodPost, "/v1/login", strings.NewReader(`{"code":"`+code+`"}`),
			map[string]string{"Content-Type": "application/json", "X-Forwarded-For": ip})
	}
	for i, ip := range []string{"2001:db8:1:2::1", "2001:db8:1:2::2"} {
		if a := from(ip, "v6-"+strconv.Itoa(i)); a.status != 200 {
			t.Fatalf("%s: %d %s", ip, a.status, a.body)
		}
	}
	wantProblem(t, from("2001:db8:1:2:ffff::3", "v6-3"), 429, "rate-limited")
	if a := from("2001:db8:1:3::1", "v6-other-64"); a.status != 200 {
		t.Fatalf("another /64: %d %s", a.status, a.body)
	}
	for i, ip := range []string{"192.0.2.1", "192.0.2.1", "192.0.2.2"} {
		if a := from(ip, "v4-"+strconv.Itoa(i)); a.status != 200 {
			t.Fatalf("%s: %d %s", ip, a.status, a.body)
		}
	}
}

func TestRequestIDFromCallerIsKeptOnlyWhenPlain(t *testing.T) {
	f := newFixture(t, options{})
	for _, tc := range []struct {
		sent string
		kept bool
	}{
		{"req-123_abc.def", true},
		{strings.Repeat("A", 20000), false},
		{"id with spaces", false},
		{"", false},
	} {
		header := map[string]string{}
		if tc.sent != "" {
			header["X-Request-Id"] = tc.sent
		}
		got := f.send(t, http.MethodGet, "/healthz", nil, header).header.Get("X-Request-Id")
		if got == "" || len(got) > 64 {
			t.Fatalf("sent %.20q: answered request id %.20q", tc.sent, got)
		}
		if (got == tc.sent) != tc.kept {
			t.Errorf("sent %.20q: answered %.20q, kept = %v, want %v", tc.sent, got, got == tc.sent, tc.kept)
		}
	}
	if strings.Contains(f.logs.String(), strings.Repeat("A", 100)) {
		t.Fatal("a caller's oversized request id reached the logs")
	}
}

// TestRequestTimeoutAnswersProblem: a WeChat slower than the request's time
// budget ends in a 504 problem within that budget, not in a cut connection.
func TestRequestTimeoutAnswersProblem(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{requestTimeout: 300 * time.Millisecond})
	tok := f.login(t, appA, "slow-wechat")
	f.wx.SetFault("/wxa/checksession", emulator.Fault{Hang: 5 * time.Second, PassThrough: true})
	start := time.Now()
	a := f.post(t, "/v1/session/check", tok, ``)
	took := time.Since(start)
	wantProblem(t, a, 504, "wechat-timeout")
	if took > 1500*time.Millisecond {
		t.Fatalf("answered after %v; the request budget is 300ms", took)
	}
}

// BenchmarkHTTP measures whole requests over loopback through the real
// middleware chain: a login (WeChat emulated in process, so this is
// wxtoken's own cost plus one loopback round trip to the emulator), and the
// Bearer calls that only need the token: decrypt and userinfo, with the
// verified-token cache as served (its default size), and without it
// ("-nocache": a signature check and an AES-GCM open on every call).
func BenchmarkHTTP(b *testing.B) {
	f := newFixture(b, options{dev: true, cacheEntries: token.DefaultCacheEntries})
	b.Run("login", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			f.login(b, appA, "bench-"+strconv.Itoa(i))
		}
	})
	nocache := newFixture(b, options{dev: true})
	for _, fx := range []struct {
		suffix string
		f      *fixture
	}{{"", f}, {"-nocache", nocache}} {
		tok := fx.f.login(b, appA, "bench-user")
		enc := fx.f.post(b, "/dev/encrypt", tok, `{"nickName":"Band","gender":1,"city":"Guangzhou"}`)
		for _, path := range []string{"/v1/decrypt", "/v1/userinfo"} {
			b.Run(strings.TrimPrefix(path, "/v1/")+fx.suffix, func(b *testing.B) {
				for b.Loop() {
					if a := fx.f.post(b, path, tok, string(enc.body)); a.status != 200 {
						b.Fatalf("%d %s", a.status, a.body)
					}
				}
			})
		}
	}
	b.Run("jwks", func(b *testing.B) {
		for b.Loop() {
			if a := f.do(b, http.MethodGet, "/.well-known/jwks.json", "", "", ""); a.status != 200 {
				b.Fatal(a.status)
			}
		}
	})
}

// TestSlowBodyDoesNotEatWeChatTime: the request budget starts once the body
// has arrived, so a client slow to send it still gets its login, and WeChat
// (and its circuit breaker) never sees an already-expired call.
func TestSlowBodyDoesNotEatWeChatTime(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{requestTimeout: 300 * time.Millisecond})
	// More logins than the breaker's threshold of 5, all at once: each
	// client takes 400 ms to send its body.
	const logins = 6
	statuses := make(chan string, logins)
	for i := range logins {
		pr, pw := io.Pipe()
		go func() {
			_, _ = io.WriteString(pw, `{"code":`)
			time.Sleep(400 * time.Millisecond)
			_, _ = io.WriteString(pw, `"slow-body-`+strconv.Itoa(i)+`"}`)
			pw.Close()
		}()
		go func() {
			resp, err := http.Post(f.srv.URL+"/v1/login", "application/json", pr)
			if err != nil {
				statuses <- err.Error()
				return
			}
			resp.Body.Close()
			statuses <- resp.Status
		}()
	}
	for range logins {
		if st := <-statuses; st != "200 OK" {
			t.Errorf("a login with a body slower than the request budget: %s", st)
		}
	}
}

// TestFailedAuthenticationsAreLimited: each forged token costs a signature
// check, so failed bearer authentications are limited per client like
// logins; valid tokens never draw from that budget, and another client is
// not affected.
func TestFailedAuthenticationsAreLimited(t *testing.T) {
	_, loopback, _ := net.ParseCIDR("127.0.0.0/8")
	f := newFixture(t, options{authFailRate: 0.01, trusted: []*net.IPNet{loopback}}) // burst 3
	good := f.login(t, appA, "auth-fail")
	dot := strings.LastIndexByte(good, '.')
	sig := []byte(good[dot+1:])
	sig[10] ^= 'A' ^ 'B'
	forged := good[:dot+1] + string(sig)
	from := func(ip, tok string) answer {
		return f.send(t, http.MethodPost, "/v1/session/check", nil,
			map[string]string{"Authorization": "Bearer " + tok, "X-Forwarded-For": ip})
	}
	for i := range 3 {
		for range 3 { // valid tokens in between are served and cost nothing
			if a := from("203.0.113.5", good); a.status != 200 {
				t.Fatalf("valid token after %d failures: %d %s", i, a.status, a.body)
			}
		}
		wantProblem(t, from("203.0.113.5", forged), 401, "invalid-token")
	}
	a := from("203.0.113.5", forged)
	wantProblem(t, a, 429, "rate-limited")
	// Once the budget is spent the address is refused before any token is
	// checked, the check being the cost (like logins, per address).
	wantProblem(t, from("203.0.113.5", good), 429, "rate-limited")
	if a.header.Get("Retry-After") != "100" {
		t.Errorf("Retry-After %q, want 100 (one failure every 100 s)", a.header.Get("Retry-After"))
	}
	if strings.Contains(f.logs.String(), forged) {
		t.Error("the forged token reached the logs")
	}
	// Another client is untouched, forged token or not; a missing token is
	// a failure too.
	wantProblem(t, from("203.0.113.6", forged), 401, "invalid-token")
	if a := from("2001:db8:5::1", good); a.status != 200 {
		t.Fatalf("another client with a valid token: %d %s", a.status, a.body)
	}
	for range 3 {
		wantProblem(t, f.send(t, http.MethodPost, "/v1/decrypt", nil, map[string]string{"X-Forwarded-For": "198.51.100.9"}), 401, "unauthorized")
	}
	wantProblem(t, f.send(t, http.MethodPost, "/v1/decrypt", nil, map[string]string{"X-Forwarded-For": "198.51.100.9"}), 429, "rate-limited")
}

// TestAuthFailureLimitSparesCachedTokens: users behind one carrier NAT share
// an address; once forged tokens have spent its budget, tokens the service
// already verified (and cached) still work, and only tokens it would have
// to verify anew are refused.
func TestAuthFailureLimitSparesCachedTokens(t *testing.T) {
	_, loopback, _ := net.ParseCIDR("127.0.0.0/8")
	f := newFixture(t, options{authFailRate: 0.01, trusted: []*net.IPNet{loopback}, cacheEntries: 100}) // burst 3
	good := f.login(t, appA, "nat-good")
	fresh := f.login(t, appA, "nat-fresh")
	forged := good[:len(good)-4] + "AAAA"
	from := func(ip, tok string) answer {
		return f.send(t, http.MethodPost, "/v1/session/check", nil,
			map[string]string{"Authorization": "Bearer " + tok, "X-Forwarded-For": ip})
	}
	if a := from("203.0.113.7", good); a.status != 200 { // verified once: cached
		t.Fatalf("valid token: %d %s", a.status, a.body)
	}
	for range 3 {
		wantProblem(t, from("203.0.113.7", forged), 401, "invalid-token")
	}
	wantProblem(t, from("203.0.113.7", forged), 429, "rate-limited")
	if a := from("203.0.113.7", good); a.status != 200 {
		t.Errorf("a cached valid token behind the exhausted address: %d %s", a.status, a.body)
	}
	wantProblem(t, from("203.0.113.7", fresh), 429, "rate-limited")
}

// TestFailedDecryptsAreLimitedPerUser: every decrypt attempt with rewritten
// data asks the session's key a question (AES-CBC has no MAC), so failures
// are limited per user with the failed-authentication budget; genuine data
// costs nothing and other users are untouched.
func TestFailedDecryptsAreLimitedPerUser(t *testing.T) {
	f := newFixture(t, options{dev: true, authFailRate: 0.01}) // burst 3
	mallory, alice := f.login(t, appA, "mallory"), f.login(t, appA, "alice-data")
	enc := f.post(t, "/dev/encrypt", mallory, `{"nickName":"M"}`)
	if enc.status != 200 {
		t.Fatalf("dev encrypt: %d %s", enc.status, enc.body)
	}
	pair := enc.json(t)
	good, _ := json.Marshal(map[string]any{"encryptedData": pair["encryptedData"], "iv": pair["iv"]})
	forged, _ := json.Marshal(map[string]any{"encryptedData": pair["encryptedData"], "iv": "AAAAAAAAAAAAAAAAAAAAAA=="})
	for i := range 3 {
		for range 2 {
			if a := f.post(t, "/v1/decrypt", mallory, string(good)); a.status != 200 {
				t.Fatalf("genuine data after %d failures: %d %s", i, a.status, a.body)
			}
		}
		wantProblem(t, f.post(t, "/v1/decrypt", mallory, string(forged)), 400, "decryption-failed")
	}
	a := f.post(t, "/v1/decrypt", mallory, string(forged))
	wantProblem(t, a, 429, "rate-limited")
	if a.header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	withProfile, _ := json.Marshal(map[string]any{"rawData": pair["rawData"], "signature": pair["signature"],
		"encryptedData": pair["encryptedData"], "iv": "AAAAAAAAAAAAAAAAAAAAAA=="})
	wantProblem(t, f.post(t, "/v1/userinfo", mallory, string(withProfile)), 429, "rate-limited")
	wantProblem(t, f.post(t, "/v1/decrypt", alice, string(forged)), 400, "decryption-failed")
}
