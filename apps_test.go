package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/emulator"
	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/wechat"
)

// Two made-up mini programs under one Open Platform account, known to the
// test emulator, and a third one for the risk modes.
const (
	appA    = "wxaaaa1111aaaa1111"
	appB    = "wxbbbb2222bbbb2222"
	appC    = "wxcccc3333cccc3333"
	secretA = "secret-a-never-logged-000000000001"
	secretB = "secret-b-never-logged-000000000002"
	secretC = "secret-c-never-logged-000000000003"
)

// appsFixture is a world with an emulator serving three apps and an apps
// file instead of WECHAT_APPID.
type appsFixture struct {
	emu     *emulator.Emulator
	env     env
	file    string
	secrets string // a directory for secret files
}

func newAppsFixture(t *testing.T, ext, content string) *appsFixture {
	t.Helper()
	emu := emulator.New(emulator.Config{Apps: map[string]string{appA: secretA, appB: secretB, appC: secretC}, UnionID: true})
	ts := httptest.NewServer(emu)
	t.Cleanup(ts.Close)
	dir := t.TempDir()
	f := &appsFixture{emu: emu, file: filepath.Join(dir, "apps"+ext), secrets: dir, env: env{
		"WXTOKEN_ADDR":            "127.0.0.1:0",
		"WXTOKEN_KEYS_DIR":        filepath.Join(dir, "keys"),
		"WXTOKEN_ISSUER":          "https://auth.example.test",
		"WECHAT_API_BASE":         ts.URL,
		"WXTOKEN_LOGIN_RATE":      "0",
		"WXTOKEN_USER_RATE":       "0",
		"WXTOKEN_RELOAD_INTERVAL": "100ms",
	}}
	f.env["WXTOKEN_APPS_FILE"] = f.file
	f.write(t, content)
	mustRun(t, f.env, "keys", "init")
	return f
}

// write replaces the apps file atomically, as a config management tool would.
func (f *appsFixture) write(t *testing.T, content string) {
	t.Helper()
	tmp := f.file + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, f.file); err != nil {
		t.Fatal(err)
	}
}

// secretFile writes a secret file and returns its path.
func (f *appsFixture) secretFile(t *testing.T, name, value string) string {
	t.Helper()
	p := filepath.Join(f.secrets, name)
	if err := os.WriteFile(p, []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// loginApp logs in to appid with code; it returns the whole exchange.
func loginApp(t testing.TB, base, appid, code string) call {
	t.Helper()
	body := map[string]string{"code": code}
	if appid != "" {
		body["appid"] = appid
	}
	return postJSON(t, base+"/v1/login", "", body)
}

func mustLoginApp(t testing.TB, base, appid, code string) (string, map[string]any) {
	t.Helper()
	c := loginApp(t, base, appid, code)
	if c.Status != http.StatusOK {
		t.Fatalf("login to %s with %q: %d %s", appid, code, c.Status, c.Body)
	}
	m := c.json(t)
	return m["access_token"].(string), m
}

// userData is what WeChat gives a mini program for data of appid (run
// data, which names no user), encrypted with sessionKey.
func userData(t testing.TB, sessionKey, appid string) map[string]string {
	t.Helper()
	plain := mustJSON(t, map[string]any{"stepInfoList": []any{}, "watermark": map[string]any{"appid": appid, "timestamp": time.Now().Unix()}})
	enc, iv, err := wechat.EncryptUserData(secret.String(sessionKey), plain)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{"encryptedData": enc, "iv": iv}
}

// TestTwoAppsEndToEnd: each app logs in with its own secret and TTL, one
// issuer and one JWKS verify both, the same person has one unionid and an
// openid per app, and a token of one app never opens the other's data.
func TestTwoAppsEndToEnd(t *testing.T) {
	f := newAppsFixture(t, ".yaml", `apps:
  - appid: `+appA+`
    secret_file: `+filepath.Join(t.TempDir(), "never-read")+`
`)
	// The secret file above does not exist: serve must refuse to start.
	if err := run(context.Background(), []string{"wxtoken", "serve"}, f.env.getenv, io.Discard, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "app 1 ("+appA+"): secret_file") {
		t.Fatalf("serve with an unreadable secret file: %v", err)
	}
	f.write(t, `apps:
  - appid: `+appA+`
    secret_file: `+f.secretFile(t, "a", secretA)+`
    token_ttl: 10m
    risk_check: off
  - appid: `+appB+`
    secret: "`+secretB+`"
`)
	s := startServer(t, f.env)

	tokA, ansA := mustLoginApp(t, s.URL, appA, "alice~1")
	tokB, ansB := mustLoginApp(t, s.URL, appB, "alice~2")
	_, claimsA := verifyDownstream(t, s.URL, "https://auth.example.test", appA, tokA)
	_, claimsB := verifyDownstream(t, s.URL, "https://auth.example.test", appB, tokB)
	if claimsA["client_id"] != appA || claimsB["client_id"] != appB {
		t.Errorf("client_id %v / %v", claimsA["client_id"], claimsB["client_id"])
	}
	if ansA["unionid"] == nil || ansA["unionid"] != ansB["unionid"] || claimsA["unionid"] != claimsB["unionid"] {
		t.Errorf("one person, unionids %v and %v", ansA["unionid"], ansB["unionid"])
	}
	if ansA["openid"] == ansB["openid"] {
		t.Errorf("one person has the same openid %v in two apps", ansA["openid"])
	}
	if ansA["expires_in"] != float64(600) || ansB["expires_in"] != float64(7200) {
		t.Errorf("expires_in A %v (want 600, its token_ttl), B %v (want 7200, the default)", ansA["expires_in"], ansB["expires_in"])
	}
	if exp, iat := claimsA["exp"].(float64), claimsA["iat"].(float64); exp-iat != 600 {
		t.Errorf("A's token lives %vs, want 600", exp-iat)
	}

	// B's data: B's session_key and watermark. A's token opens neither it
	// nor data under A's own key that carries B's watermark.
	skA := f.emu.CurrentSessionKey(appA, ansA["openid"].(string))
	skB := f.emu.CurrentSessionKey(appB, ansB["openid"].(string))
	if c := postJSON(t, s.URL+"/v1/decrypt", tokB, userData(t, skB, appB)); c.Status != http.StatusOK {
		t.Fatalf("B's token on B's data: %d %s", c.Status, c.Body)
	}
	assertProblem(t, postJSON(t, s.URL+"/v1/decrypt", tokA, userData(t, skB, appB)), 400, "decryption-failed")
	assertProblem(t, postJSON(t, s.URL+"/v1/decrypt", tokA, userData(t, skA, appB)), 400, "decryption-failed")
	if c := postJSON(t, s.URL+"/v1/decrypt", tokA, userData(t, skA, appA)); c.Status != http.StatusOK {
		t.Fatalf("A's token on A's data: %d %s", c.Status, c.Body)
	}

	// With several apps, a login must name its app; an unknown one is refused.
	p := assertProblem(t, loginApp(t, s.URL, "", "bob~1"), 400, "invalid-request")
	if !strings.Contains(p["detail"].(string), `"appid"`) {
		t.Errorf("detail does not name the missing field: %v", p["detail"])
	}
	assertProblem(t, loginApp(t, s.URL, "wxdddd4444dddd4444", "bob~2"), 400, "unknown-app")
	if logs := s.stoppedLogs(t); strings.Contains(logs, secretA) || strings.Contains(logs, secretB) {
		t.Error("an appsecret is in the logs")
	}
}

// TestOneAppInFileNeedsNoAppID: with one app listed, appid stays optional.
func TestOneAppInFileNeedsNoAppID(t *testing.T) {
	f := newAppsFixture(t, ".json", `{"apps": [{"appid": "`+appA+`", "secret": "`+secretA+`", "token_ttl": "30m"}]}`)
	s := startServer(t, f.env)
	_, ans := mustLoginApp(t, s.URL, "", "carol~1")
	if ans["expires_in"] != float64(1800) {
		t.Errorf("expires_in %v, want 1800", ans["expires_in"])
	}
	assertProblem(t, loginApp(t, s.URL, appB, "carol~2"), 400, "unknown-app")
}

// TestWrongSecretOrOutageFailsOnlyThatApp: B's wrong secret fails B's
// logins only; an outage of WeChat for C opens C's circuit breaker only.
func TestWrongSecretOrOutageFailsOnlyThatApp(t *testing.T) {
	f := newAppsFixture(t, ".yaml", `apps:
  - {appid: `+appA+`, secret: "`+secretA+`"}
  - {appid: `+appB+`, secret: "not-`+secretB+`"}
  - {appid: `+appC+`, secret: "`+secretC+`"}
`)
	s := startServer(t, f.env)
	p := assertProblem(t, loginApp(t, s.URL, appB, "dan~1"), 502, "wechat-error")
	if p["errcode"] != float64(wechat.CodeInvalidAppSecret) {
		t.Errorf("errcode %v, want 40125", p["errcode"])
	}
	mustLoginApp(t, s.URL, appA, "dan~2")

	f.emu.SetFault("/sns/jscode2session", emulator.Fault{AppID: appC, HTTPStatus: 500})
	for i := range wechat.DefaultBreakerThreshold {
		assertProblem(t, loginApp(t, s.URL, appC, "erin~"+string(rune('a'+i))), 502, "wechat-error")
	}
	arrived := f.emu.Calls("/sns/jscode2session")
	assertProblem(t, loginApp(t, s.URL, appC, "erin~z"), 503, "unavailable")
	if f.emu.Calls("/sns/jscode2session") != arrived {
		t.Error("C's open circuit still let a login through to WeChat")
	}
	tokA, _ := mustLoginApp(t, s.URL, appA, "erin~y")
	if c := postJSON(t, s.URL+"/v1/session/check", tokA, nil); c.Status != http.StatusOK {
		t.Errorf("A's session check while C's circuit is open: %d %s", c.Status, c.Body)
	}
}

// TestInvalidAppsFileStopsServe: every problem is reported at start with
// the app and field it concerns, and serve does not start. (Each kind of
// problem the apps file can have is proved in package apps.)
func TestInvalidAppsFileStopsServe(t *testing.T) {
	tests := []struct {
		name, ext, content string
		extra              []string
		want               []string
	}{
		{"bad fields", ".yaml", "apps:\n  - {appid: " + appA + ", secret: x}\n  - {appid: " + appB + ", token_ttl: 48h, risk_check: refuse:9}\n", nil,
			[]string{"app 2 (" + appB + "): secret: is missing", "app 2 (" + appB + "): token_ttl", "app 2 (" + appB + "): risk_check"}},
		{"with WECHAT_APPID", ".yaml", "apps:\n  - {appid: " + appA + ", secret: x}\n", []string{"WECHAT_APPID", appA},
			[]string{"WXTOKEN_APPS_FILE and WECHAT_APPID are both set"}},
		{"with WECHAT_SECRET_FILE", ".yaml", "apps:\n  - {appid: " + appA + ", secret: x}\n", []string{"WECHAT_SECRET_FILE", "/run/x"},
			[]string{"WXTOKEN_APPS_FILE and WECHAT_SECRET (or WECHAT_SECRET_FILE) are both set"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newAppsFixture(t, tc.ext, tc.content)
			e := f.env.with(tc.extra...)
			var stderr strings.Builder
			err := run(context.Background(), []string{"wxtoken", "serve"}, e.getenv, io.Discard, &stderr)
			if err == nil {
				t.Fatal("serve started with an invalid apps file")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(stderr.String(), `"msg":"listening"`) {
				t.Error("serve listened")
			}
			out, _, cerr := configCheck(t, e)
			if cerr == nil {
				t.Errorf("config check passed an invalid apps file:\n%s", out)
			}
		})
	}
}

// TestAppsFileReload: serve watches the apps file every
// WXTOKEN_RELOAD_INTERVAL, so a valid change is served without a restart.
// (That an invalid change is logged once and the last good apps kept is
// proved in package apps.)
func TestAppsFileReload(t *testing.T) {
	f := newAppsFixture(t, ".yaml", "apps:\n  - {appid: "+appA+", secret: \""+secretA+"\"}\n")
	s := startServer(t, f.env)
	assertProblem(t, loginApp(t, s.URL, appB, "fay~1"), 400, "unknown-app")

	f.write(t, "apps:\n  - {appid: "+appA+", secret: \""+secretA+"\"}\n  - {appid: "+appB+", secret: \""+secretB+"\", token_ttl: 5m}\n")
	var ans map[string]any
	eventually(t, 10*time.Second, "B served after the reload", func() bool {
		c := loginApp(t, s.URL, appB, "fay~"+time.Now().Format("150405.000000000"))
		if c.Status == http.StatusOK {
			ans = c.json(t)
		}
		return c.Status == http.StatusOK
	})
	if ans["expires_in"] != float64(300) {
		t.Errorf("B's expires_in %v, want its token_ttl 300", ans["expires_in"])
	}
	mustLoginApp(t, s.URL, appA, "fay~a")
}

// TestSessionReset: the new token carries the new session_key (data made
// with it decrypts, data made with the old one does not); the old key fails
// checksession at WeChat; a token whose key was replaced gets stale-session.
func TestSessionReset(t *testing.T) {
	f := newAppsFixture(t, ".yaml", "apps:\n  - {appid: "+appA+", secret: \""+secretA+"\", token_ttl: 20m}\n  - {appid: "+appB+", secret: \""+secretB+"\"}\n")
	s := startServer(t, f.env)
	oldTok, ans := mustLoginApp(t, s.URL, appA, "gus~1")
	openid := ans["openid"].(string)
	oldKey := f.emu.CurrentSessionKey(appA, openid)

	c := postJSON(t, s.URL+"/v1/session/reset", oldTok, nil)
	if c.Status != http.StatusOK {
		t.Fatalf("reset: %d %s", c.Status, c.Body)
	}
	if c.Header.Get("Cache-Control") != "no-store" {
		t.Error("reset answer is cacheable")
	}
	m := c.json(t)
	newTok := m["access_token"].(string)
	newKey := f.emu.CurrentSessionKey(appA, openid)
	if newKey == oldKey || newKey == "" {
		t.Fatal("WeChat's session_key did not change")
	}
	if m["openid"] != openid || m["unionid"] != ans["unionid"] || m["expires_in"] != float64(1200) {
		t.Errorf("reset answer %v", m)
	}
	_, claims := verifyDownstream(t, s.URL, "https://auth.example.test", appA, newTok)
	if claims["sub"] != openid || claims["client_id"] != appA {
		t.Errorf("claims %v", claims)
	}
	if strings.Contains(string(c.Body), newKey) {
		t.Error("the new session_key is in the answer")
	}

	if c := postJSON(t, s.URL+"/v1/decrypt", newTok, userData(t, newKey, appA)); c.Status != http.StatusOK {
		t.Errorf("new token on data made with the new key: %d %s", c.Status, c.Body)
	}
	assertProblem(t, postJSON(t, s.URL+"/v1/decrypt", newTok, userData(t, oldKey, appA)), 400, "decryption-failed")
	assertProblem(t, postJSON(t, s.URL+"/v1/decrypt", oldTok, userData(t, newKey, appA)), 400, "decryption-failed")

	for _, tc := range []struct {
		tok  string
		want bool
	}{{oldTok, false}, {newTok, true}} {
		c := postJSON(t, s.URL+"/v1/session/check", tc.tok, nil)
		if c.Status != http.StatusOK || c.json(t)["valid"] != tc.want {
			t.Errorf("session check: %d %s, want valid %v", c.Status, c.Body, tc.want)
		}
	}
	assertProblem(t, postJSON(t, s.URL+"/v1/session/reset", oldTok, nil), 409, "stale-session")
	assertProblem(t, postJSON(t, s.URL+"/v1/session/reset", "", nil), 401, "unauthorized")
	if strings.Contains(s.stoppedLogs(t), newKey) {
		t.Error("the new session_key is in the logs")
	}
}

// TestRiskModes: off never asks; flag puts the rank in the token and never
// blocks; refuse:N refuses ranks of N or more and fails closed.
func TestRiskModes(t *testing.T) {
	f := newAppsFixture(t, ".yaml", `apps:
  - {appid: `+appA+`, secret: "`+secretA+`", risk_check: flag}
  - {appid: `+appB+`, secret: "`+secretB+`", risk_check: "refuse:3"}
  - {appid: `+appC+`, secret: "`+secretC+`"}
`)
	s := startServer(t, f.env)
	const riskPath = "/wxa/getuserriskrank"
	riskClaim := func(t *testing.T, appid, tok string) any {
		t.Helper()
		_, claims := verifyDownstream(t, s.URL, "https://auth.example.test", appid, tok)
		return claims["risk_rank"]
	}

	t.Run("off", func(t *testing.T) {
		f.emu.SetRiskRank(appC, emulator.OpenID(appC, "hal"), 4)
		before := f.emu.Calls(riskPath)
		tok, ans := mustLoginApp(t, s.URL, appC, "hal~1")
		if f.emu.Calls(riskPath) != before || ans["risk_rank"] != nil || riskClaim(t, appC, tok) != nil {
			t.Errorf("risk checked with risk_check off: %v", ans)
		}
	})
	t.Run("flag", func(t *testing.T) {
		f.emu.SetRiskRank(appA, emulator.OpenID(appA, "ida"), 4)
		tok, ans := mustLoginApp(t, s.URL, appA, "ida~1")
		if ans["risk_rank"] != float64(4) || riskClaim(t, appA, tok) != float64(4) {
			t.Errorf("flag: answer %v, claim %v; want 4", ans["risk_rank"], riskClaim(t, appA, tok))
		}
		tok, _ = mustLoginApp(t, s.URL, appA, "jon~1")
		if riskClaim(t, appA, tok) != float64(0) {
			t.Errorf("flag: claim %v for a rank-0 user, want 0", riskClaim(t, appA, tok))
		}
		f.emu.SetFault(riskPath, emulator.Fault{HTTPStatus: 500})
		defer f.emu.SetFault(riskPath, emulator.Fault{})
		tok, ans = mustLoginApp(t, s.URL, appA, "ida~2")
		if ans["risk_rank"] != nil || riskClaim(t, appA, tok) != nil {
			t.Errorf("flag with the risk API failing: rank %v", ans["risk_rank"])
		}
	})
	t.Run("refuse", func(t *testing.T) {
		f.emu.SetRiskRank(appB, emulator.OpenID(appB, "kim"), 3)
		f.emu.SetRiskRank(appB, emulator.OpenID(appB, "lea"), 2)
		assertProblem(t, loginApp(t, s.URL, appB, "kim~1"), 403, "risk-refused")
		tok, ans := mustLoginApp(t, s.URL, appB, "lea~1")
		if ans["risk_rank"] != float64(2) || riskClaim(t, appB, tok) != float64(2) {
			t.Errorf("refuse:3 with rank 2: %v", ans["risk_rank"])
		}
		f.emu.SetFault(riskPath, emulator.Fault{Errcode: -1, AppID: appB})
		defer f.emu.SetFault(riskPath, emulator.Fault{})
		p := assertProblem(t, loginApp(t, s.URL, appB, "lea~2"), 503, "unavailable")
		if !strings.Contains(p["detail"].(string), "risk check") {
			t.Errorf("detail %v", p["detail"])
		}
		mustLoginApp(t, s.URL, appA, "lea~3") // the fault is B's only; flag mode would not block anyway
	})
}

// TestConfigCheckShowsApps: config check lists the apps with secrets masked.
func TestConfigCheckShowsApps(t *testing.T) {
	f := newAppsFixture(t, ".yaml", "")
	f.write(t, "apps:\n  - {appid: "+appA+", secret_file: "+f.secretFile(t, "a", secretA)+", token_ttl: 1h, risk_check: flag}\n  - {appid: "+appB+", secret: \""+secretB+"\"}\n")
	out, errOut, err := configCheck(t, f.env)
	if err != nil {
		t.Fatalf("config check: %v\n%s%s", err, out, errOut)
	}
	if v, src := settingLine(t, out, "WXTOKEN_APPS_FILE"); v != f.file || src != "environment" {
		t.Errorf("WXTOKEN_APPS_FILE line: %q %q", v, src)
	}
	for _, w := range []string{"app " + appA, "token_ttl 1h", "risk_check flag", "app " + appB, "risk_check off", "masked"} {
		if !strings.Contains(out, w) {
			t.Errorf("config check does not show %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, secretA) || strings.Contains(out, secretB) {
		t.Errorf("config check shows a secret:\n%s", out)
	}
}

// TestDevServesAnyAppID: dev mode logs in to any well-formed appid.
func TestDevServesAnyAppID(t *testing.T) {
	e := env{"WXTOKEN_ADDR": "127.0.0.1:0", "WXTOKEN_KEYS_DIR": filepath.Join(t.TempDir(), "keys"), "WXTOKEN_LOGIN_RATE": "0"}
	s := startServer(t, e, "--dev")
	for _, appid := range []string{"", appA, appB} {
		tok, _ := mustLoginApp(t, s.URL, appid, "mo~1")
		want := appid
		if want == "" {
			want = devAppID
		}
		verifyDownstream(t, s.URL, defaultIssuer, want, tok)
	}
	assertProblem(t, loginApp(t, s.URL, "not-an-appid", "mo~2"), 400, "unknown-app")
}

// TestSecretFileRefusesFIFO: a FIFO put where WECHAT_SECRET_FILE is expected
// is refused at once; reading it would block start-up until someone wrote
// to it. (The apps file and its secret files: package apps.)
func TestSecretFileRefusesFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	for _, e := range []env{
		{"WECHAT_APPID": "wx1111222233334444", "WECHAT_SECRET_FILE": fifo},
	} {
		done := make(chan error, 1)
		go func() { _, _, err := configCheck(t, e); done <- err }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%v: a FIFO was accepted", e)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%v: reading a FIFO blocked", e)
		}
	}
}
