package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/wxtoken/wxtoken/emulator"
)

// verifyDownstream verifies a token the way another service would: a JWKS
// library fetching the public keys, pinned algorithms, iss/aud/exp checks.
func verifyDownstream(t testing.TB, base, issuer, appID, raw string) (*jwt.Token, jwt.MapClaims) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kf, err := keyfunc.NewDefaultCtx(ctx, []string{base + "/.well-known/jwks.json"})
	if err != nil {
		t.Fatalf("JWKS: %v", err)
	}
	claims := jwt.MapClaims{}
	tok, err := jwt.ParseWithClaims(raw, claims, kf.Keyfunc,
		jwt.WithValidMethods([]string{"ES256", "EdDSA", "RS256"}),
		jwt.WithIssuer(issuer), jwt.WithAudience(appID), jwt.WithExpirationRequired())
	if err != nil {
		t.Fatalf("downstream verification failed: %v", err)
	}
	return tok, claims
}

// encodingsOf lists the forms a leaked session_key could take.
func encodingsOf(sessionKey string) []string {
	out := []string{sessionKey, base64.RawURLEncoding.EncodeToString([]byte(sessionKey)),
		base64.StdEncoding.EncodeToString([]byte(sessionKey)), hex.EncodeToString([]byte(sessionKey))}
	if raw, err := base64.StdEncoding.DecodeString(sessionKey); err == nil {
		out = append(out, string(raw), hex.EncodeToString(raw), base64.RawURLEncoding.EncodeToString(raw),
			strings.TrimRight(base64.StdEncoding.EncodeToString(raw), "="))
	}
	return out
}

func TestLoginIssuesVerifiableToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	s := startServer(t, f.env)

	raw, answer := login(t, s.URL, "code-alice")
	openid, _ := answer["openid"].(string)
	if answer["token_type"] != "Bearer" || openid == "" || answer["unionid"] == "" {
		t.Fatalf("login answer = %v", answer)
	}
	if answer["expires_in"] != float64(7200) {
		t.Errorf("expires_in = %v, want 7200", answer["expires_in"])
	}
	if _, ok := answer["session_key"]; ok {
		t.Fatal("login answer contains session_key")
	}

	tok, claims := verifyDownstream(t, s.URL, "https://auth.example.test", testAppID, raw)
	if tok.Header["typ"] != "at+jwt" || tok.Header["alg"] != "ES256" || tok.Header["kid"] == "" {
		t.Errorf("header = %v", tok.Header)
	}
	if claims["sub"] != openid || claims["client_id"] != testAppID || claims["unionid"] != answer["unionid"] {
		t.Errorf("claims = %v", claims)
	}
	if claims["jti"] == "" || claims["wxsk"] == nil {
		t.Errorf("jti/wxsk missing: %v", claims)
	}
	iat, _ := claims["iat"].(float64)
	exp, _ := claims["exp"].(float64)
	if exp-iat != 7200 {
		t.Errorf("exp - iat = %v, want 7200", exp-iat)
	}

	// The session_key WeChat gave appears nowhere: not in the answer, not in
	// the decoded payload, in no encoding.
	sk := f.emu.CurrentSessionKey(testAppID, openid)
	if sk == "" {
		t.Fatal("emulator has no session key for the user")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, enc := range encodingsOf(sk) {
		for name, hay := range map[string]string{"answer": string(mustJSON(t, answer)), "payload": string(payload), "token": raw} {
			if strings.Contains(hay, enc) {
				t.Errorf("session_key (as %q) found in %s", enc, name)
			}
		}
	}

	// Two logins never share a jti.
	raw2, _ := login(t, s.URL, "code-alice-2")
	_, claims2 := verifyDownstream(t, s.URL, "https://auth.example.test", testAppID, raw2)
	if claims2["jti"] == claims["jti"] {
		t.Error("two tokens share a jti")
	}
}

// TestWeChatTimeoutReachesTheClient: WECHAT_TIMEOUT bounds a WeChat call
// (a hung login answers 504 within it). The mapping of every WeChat
// failure is handlers' TestWeChatErrcodesMapped and TestWeChatFailuresMapped.
func TestWeChatTimeoutReachesTheClient(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	s := startServer(t, f.env.with("WECHAT_TIMEOUT", "500ms"))
	f.emu.SetFault("/sns/jscode2session", emulator.Fault{Hang: 3 * time.Second, Times: 1})
	c := postJSON(t, s.URL+"/v1/login", "", map[string]string{"code": "c-hang"})
	assertProblem(t, c, 504, "wechat-timeout")
	if c.Header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
}

func TestLoginWrongAppSecretIsBadGateway(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	s := startServer(t, f.env.with("WECHAT_SECRET", "wrong-secret-value"))
	c := postJSON(t, s.URL+"/v1/login", "", map[string]string{"code": "code-x"})
	p := assertProblem(t, c, 502, "wechat-error")
	if p["errcode"] != float64(40125) {
		t.Errorf("errcode = %v", p["errcode"])
	}
	if strings.Contains(string(c.Body), "wrong-secret-value") || strings.Contains(s.stoppedLogs(t), "wrong-secret-value") {
		t.Error("appsecret leaked")
	}
}

func TestOperationalRoutes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	s := startServer(t, f.env)
	for _, path := range []string{"/healthz", "/readyz"} {
		if c := do(t, "GET", s.URL+path, "", "", nil); c.Status != 200 {
			t.Errorf("%s = %d", path, c.Status)
		}
	}
	c := do(t, "GET", s.URL+"/openapi.yaml", "", "", nil)
	spec, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != 200 || string(c.Body) != string(spec) {
		t.Errorf("/openapi.yaml = %d, %d bytes; want the spec file", c.Status, len(c.Body))
	}
	// Without --dev the dev-only route does not exist.
	assertProblem(t, postJSON(t, s.URL+"/dev/encrypt", "", map[string]any{"a": 1}), http.StatusNotFound, "not-found")
	j := do(t, "GET", s.URL+"/.well-known/jwks.json", "", "", nil)
	if j.Status != 200 {
		t.Fatalf("jwks = %d", j.Status)
	}
	keysDoc := j.json(t)["keys"].([]any)
	if len(keysDoc) < 2 {
		t.Errorf("JWKS has %d keys; want the active and the next", len(keysDoc))
	}
	for _, k := range keysDoc {
		m := k.(map[string]any)
		if m["use"] != "sig" || m["alg"] != "ES256" || m["kid"] == "" {
			t.Errorf("jwk %v", m)
		}
		for _, private := range []string{"d", "k", "p", "q", "dp", "dq", "qi"} {
			if _, ok := m[private]; ok {
				t.Errorf("jwk has private member %q", private)
			}
		}
	}
}

func TestKeysInitIsIdempotent(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "keys")
	e := env{"WXTOKEN_KEYS_DIR": dir}
	mustRun(t, e, "keys", "init")
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode = %v", st.Mode().Perm())
	}
	before := snapshotDir(t, dir)
	for name := range before {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", name, fi.Mode().Perm())
		}
	}
	out := mustRun(t, e, "keys", "init")
	if !strings.Contains(out, "nothing changed") {
		t.Errorf("second init said %q", out)
	}
	after := snapshotDir(t, dir)
	if len(before) != len(after) {
		t.Fatalf("files changed: %d → %d", len(before), len(after))
	}
	for name, b := range before {
		if after[name] != b {
			t.Errorf("%s changed", name)
		}
	}
}

func snapshotDir(t testing.TB, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = string(b)
	}
	return m
}

func TestServeRefusesToStart(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	empty := filepath.Join(t.TempDir(), "empty")
	tests := []struct {
		name string
		env  env
		want string
	}{
		{"no keys", f.env.with("WXTOKEN_KEYS_DIR", empty), "wxtoken keys init"},
		{"no appid", f.env.with("WECHAT_APPID", ""), "WECHAT_APPID"},
		{"no secret", f.env.with("WECHAT_SECRET", ""), "WECHAT_SECRET"},
		{"bad ttl", f.env.with("WXTOKEN_TOKEN_TTL", "forever"), "WXTOKEN_TOKEN_TTL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr strings.Builder
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := run(ctx, []string{"wxtoken", "serve"}, tc.env.getenv, &strings.Builder{}, &stderr)
			if err == nil {
				t.Fatal("serve started")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q: want one line naming %q", err, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(empty, "keyset.json")); err == nil {
		t.Error("serve generated keys by itself")
	}
}

func TestServeDevNeedsNothing(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "devkeys")
	s := startServer(t, env{"WXTOKEN_ADDR": "127.0.0.1:0", "WXTOKEN_KEYS_DIR": dir}, "--dev")
	if !strings.Contains(s.logs.String(), "DEV MODE") {
		t.Error("dev mode is not announced")
	}
	raw, answer := login(t, s.URL, "any-code")
	_, again := login(t, s.URL, "any-code-2")
	if answer["openid"] == again["openid"] {
		t.Error("different codes logged in as the same user")
	}
	verifyDownstream(t, s.URL, "http://localhost:8080", devAppID, raw)

	// /dev/encrypt then /v1/decrypt round-trips through the session's key.
	enc := postJSON(t, s.URL+"/dev/encrypt", raw, map[string]any{"nickName": "Band", "gender": 1})
	if enc.Status != 200 {
		t.Fatalf("dev/encrypt = %d %s", enc.Status, enc.Body)
	}
	dec := postJSON(t, s.URL+"/v1/decrypt", raw, enc.json(t))
	if dec.Status != 200 {
		t.Fatalf("decrypt = %d %s", dec.Status, dec.Body)
	}
	data := dec.json(t)["data"].(map[string]any)
	if data["nickName"] != "Band" || data["watermark"].(map[string]any)["appid"] != devAppID {
		t.Errorf("decrypted %v", data)
	}
	if _, err := os.Stat(filepath.Join(dir, "keyset.json")); err != nil {
		t.Errorf("dev keys not made: %v", err)
	}
}

func TestHelpNamesEverything(t *testing.T) {
	t.Parallel()
	out := mustRun(t, env{}, "--help")
	for _, want := range []string{"serve", "keys init", "keys rotate", "WXTOKEN_ADDR", "WXTOKEN_ISSUER",
		"WXTOKEN_KEYS_DIR", "WXTOKEN_TOKEN_TTL", "WECHAT_APPID", "WECHAT_SECRET", "WECHAT_API_BASE",
		"WXTOKEN_LOGIN_RATE", "WXTOKEN_TRUSTED_PROXIES", "WXTOKEN_ROTATE_EVERY", "WECHAT_SECRET_FILE"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help does not mention %s", want)
		}
	}
	// Every variable the config reads is in --help and in the README's table.
	src, err := os.ReadFile("config.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	vars := regexp.MustCompile(`"((?:WXTOKEN|WECHAT)_[A-Z_]+)"`).FindAllStringSubmatch(string(src), -1)
	if len(vars) < 15 {
		t.Fatalf("found only %d variables in config.go", len(vars))
	}
	for _, m := range vars {
		if !strings.Contains(out, m[1]) {
			t.Errorf("--help does not mention %s", m[1])
		}
		if !strings.Contains(string(readme), "| `"+m[1]+"` |") {
			t.Errorf("README's configuration table lacks %s", m[1])
		}
	}
	if out := mustRun(t, env{}, "serve", "--help"); !strings.Contains(out, "--dev") {
		t.Errorf("serve --help: %s", out)
	}
	if out := mustRun(t, env{}, "keys", "--help"); !strings.Contains(out, "--alg") || !strings.Contains(out, "--now") {
		t.Errorf("keys --help: %s", out)
	}
	if out := mustRun(t, env{}, "keys", "init", "--help"); !strings.Contains(out, "-alg") {
		t.Errorf("keys init --help: %s", out)
	}
}
