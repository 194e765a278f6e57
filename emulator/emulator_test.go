package emulator_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/emulator"
)

const (
	appID  = "wx1111222233334444"
	secret = "emulator-test-secret"
)

type answer struct {
	status      int
	contentType string
	body        map[string]any
	raw         string
}

func newServer(t *testing.T, cfg emulator.Config) (*emulator.Emulator, string) {
	t.Helper()
	if cfg.Apps == nil {
		cfg.Apps = map[string]string{appID: secret}
	}
	e := emulator.New(cfg)
	ts := httptest.NewServer(e)
	t.Cleanup(ts.Close)
	return e, ts.URL
}

func get(t *testing.T, base, path string, q url.Values) answer {
	t.Helper()
	resp, err := http.Get(base + path + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	return read(t, resp)
}

func post(t *testing.T, base, path string, q url.Values, body string) answer {
	t.Helper()
	resp, err := http.Post(base+path+"?"+q.Encode(), "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return read(t, resp)
}

func read(t *testing.T, resp *http.Response) answer {
	t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), raw: string(b)}
	_ = json.Unmarshal(b, &a.body)
	return a
}

func errcode(a answer) int {
	n, _ := a.body["errcode"].(float64)
	return int(n)
}

func login(t *testing.T, base, code string) answer {
	t.Helper()
	return get(t, base, "/sns/jscode2session", url.Values{"appid": {appID}, "secret": {secret},
		"js_code": {code}, "grant_type": {"authorization_code"}})
}

func TestCode2Session(t *testing.T) {
	e, base := newServer(t, emulator.Config{UnionID: true})
	a := login(t, base, "code-1")
	if a.status != 200 || a.contentType != "text/plain" {
		t.Fatalf("answer %d %q", a.status, a.contentType)
	}
	openid, _ := a.body["openid"].(string)
	sk, _ := a.body["session_key"].(string)
	if len(openid) != 28 || len(sk) != 24 || a.body["unionid"] == nil {
		t.Fatalf("answer %v", a.body)
	}
	if e.CurrentSessionKey(appID, openid) != sk {
		t.Error("CurrentSessionKey differs")
	}
	tests := []struct {
		name string
		q    url.Values
		want int
	}{
		{"reused code", url.Values{"appid": {appID}, "secret": {secret}, "js_code": {"code-1"}, "grant_type": {"authorization_code"}}, 40163},
		{"unknown appid", url.Values{"appid": {"wxnope"}, "secret": {secret}, "js_code": {"c"}, "grant_type": {"authorization_code"}}, 40013},
		{"wrong secret", url.Values{"appid": {appID}, "secret": {"nope"}, "js_code": {"c"}, "grant_type": {"authorization_code"}}, 40125},
		{"no code", url.Values{"appid": {appID}, "secret": {secret}, "grant_type": {"authorization_code"}}, 41008},
		{"grant type", url.Values{"appid": {appID}, "secret": {secret}, "js_code": {"c"}, "grant_type": {"x"}}, 40002},
		{"errcode code", url.Values{"appid": {appID}, "secret": {secret}, "js_code": {"err-40226"}, "grant_type": {"authorization_code"}}, 40226},
		{"busy code", url.Values{"appid": {appID}, "secret": {secret}, "js_code": {"err--1"}, "grant_type": {"authorization_code"}}, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := get(t, base, "/sns/jscode2session", tc.q)
			if a.status != 200 || errcode(a) != tc.want || a.contentType != "text/plain" {
				t.Errorf("answer %d %s, want errcode %d", a.status, a.raw, tc.want)
			}
		})
	}
	// Another code is another user; the same user logging in again gets a
	// new session_key that replaces the old.
	if b := login(t, base, "code-2"); b.body["openid"] == openid {
		t.Error("two codes, one user")
	}
	e.PresetLogin("again", openid, "", "BBBBBBBBBBBBBBBBBBBBBB==")
	login(t, base, "again")
	if e.CurrentSessionKey(appID, openid) != "BBBBBBBBBBBBBBBBBBBBBB==" {
		t.Error("a new login did not replace the session_key")
	}
}

func TestReusableCodes(t *testing.T) {
	_, base := newServer(t, emulator.Config{ReusableCodes: true})
	a, b := login(t, base, "same"), login(t, base, "same")
	if errcode(b) != 0 || a.body["openid"] != b.body["openid"] {
		t.Errorf("reusable code: %s / %s", a.raw, b.raw)
	}
}

func stableToken(t *testing.T, base string, force bool) answer {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"grant_type": "client_credential", "appid": appID, "secret": secret, "force_refresh": force})
	return post(t, base, "/cgi-bin/stable_token", nil, string(body))
}

func TestAccessTokensAndAPIs(t *testing.T) {
	e, base := newServer(t, emulator.Config{})
	a1, a2 := stableToken(t, base, false), stableToken(t, base, false)
	tok, _ := a1.body["access_token"].(string)
	if tok == "" || a2.body["access_token"] != tok || a1.body["expires_in"] != float64(7200) {
		t.Fatalf("normal mode must answer the same token: %s / %s", a1.raw, a2.raw)
	}
	if strings.Contains(tok, "ACCESS_TOKEN") {
		t.Error("placeholder token")
	}
	if a := post(t, base, "/cgi-bin/stable_token", nil, "{"); errcode(a) != 47001 {
		t.Errorf("bad JSON: %s", a.raw)
	}

	u := login(t, base, "phone-user")
	openid, sk := u.body["openid"].(string), u.body["session_key"].(string)
	phone := post(t, base, "/wxa/business/getuserphonenumber", url.Values{"access_token": {tok}}, `{"code":"p1","openid":"`+openid+`"}`)
	info, _ := phone.body["phone_info"].(map[string]any)
	if errcode(phone) != 0 || len(info["purePhoneNumber"].(string)) != 11 || info["countryCode"] != "86" ||
		info["watermark"].(map[string]any)["appid"] != appID {
		t.Fatalf("phone: %s", phone.raw)
	}
	if again := post(t, base, "/wxa/business/getuserphonenumber", url.Values{"access_token": {tok}}, `{"code":"p1"}`); errcode(again) != 40029 {
		t.Errorf("reused phone code: %s", again.raw)
	}
	if bad := post(t, base, "/wxa/business/getuserphonenumber", url.Values{"access_token": {"nope"}}, `{"code":"p2"}`); errcode(bad) != 40001 {
		t.Errorf("unknown token: %s", bad.raw)
	}

	sig := func(key string) string {
		m := hmac.New(sha256.New, []byte(key))
		return hex.EncodeToString(m.Sum(nil))
	}
	check := func(token, signature, method string) int {
		return errcode(get(t, base, "/wxa/checksession", url.Values{"access_token": {token}, "openid": {openid},
			"signature": {signature}, "sig_method": {method}}))
	}
	if n := check(tok, sig(sk), "hmac_sha256"); n != 0 {
		t.Errorf("current key: %d", n)
	}
	if n := check(tok, sig("AAAAAAAAAAAAAAAAAAAAAA=="), "hmac_sha256"); n != 87009 {
		t.Errorf("other key: %d", n)
	}
	if n := check(tok, sig(sk), "md5"); n != 87010 {
		t.Errorf("sig_method: %d", n)
	}
	e.ExpireAccessTokens()
	if n := check(tok, sig(sk), "hmac_sha256"); n != 42001 {
		t.Errorf("expired token: %d", n)
	}
	if fresh := stableToken(t, base, false); fresh.body["access_token"] == tok {
		t.Error("no new token after expiry")
	}
	if forced := stableToken(t, base, true); errcode(forced) != 0 {
		t.Errorf("force_refresh: %s", forced.raw)
	}
	if e.Calls("/cgi-bin/stable_token") != 5 || e.Calls("/cgi-bin/token") != 0 {
		t.Errorf("calls: %d stable, %d legacy", e.Calls("/cgi-bin/stable_token"), e.Calls("/cgi-bin/token"))
	}
}

func TestFaults(t *testing.T) {
	client := &http.Client{Timeout: 300 * time.Millisecond}
	tests := []struct {
		name  string
		fault emulator.Fault
		check func(t *testing.T, resp *http.Response, err error)
	}{
		{"garbage", emulator.Fault{Garbage: true}, func(t *testing.T, resp *http.Response, err error) {
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || json.Valid(b) {
				t.Errorf("garbage answer %d %s", resp.StatusCode, b)
			}
		}},
		{"http status", emulator.Fault{HTTPStatus: 503}, func(t *testing.T, resp *http.Response, err error) {
			if resp.StatusCode != 503 {
				t.Errorf("status %d", resp.StatusCode)
			}
		}},
		{"errcode", emulator.Fault{Errcode: 45011}, func(t *testing.T, resp *http.Response, err error) {
			var m map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&m)
			if m["errcode"] != float64(45011) {
				t.Errorf("answer %v", m)
			}
		}},
		{"reset", emulator.Fault{Reset: true}, func(t *testing.T, resp *http.Response, err error) {
			if err == nil {
				t.Error("a reset connection answered")
			}
		}},
		{"hang", emulator.Fault{Hang: 2 * time.Second}, func(t *testing.T, resp *http.Response, err error) {
			if err == nil {
				t.Error("a hang answered within the client timeout")
			}
		}},
		{"huge header", emulator.Fault{HeaderBytes: 64 << 10}, func(t *testing.T, resp *http.Response, err error) {
			var m map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&m)
			if len(resp.Header.Get("X-Padding")) != 64<<10 || m["openid"] == nil {
				t.Errorf("header of %d bytes, answer %v", len(resp.Header.Get("X-Padding")), m)
			}
		}},
		{"echo status", emulator.Fault{EchoStatus: true}, func(t *testing.T, resp *http.Response, err error) {
			if err == nil || !strings.Contains(err.Error(), "secret="+secret) {
				t.Errorf("err = %v, want a malformed status line quoting the query", err)
			}
		}},
		{"echo errmsg", emulator.Fault{EchoErrmsg: true}, func(t *testing.T, resp *http.Response, err error) {
			var m map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&m)
			if msg, _ := m["errmsg"].(string); m["errcode"] != float64(-1) || !strings.Contains(msg, "secret="+secret) {
				t.Errorf("answer %v", m)
			}
		}},
		{"slow but answers", emulator.Fault{Hang: 50 * time.Millisecond, PassThrough: true}, func(t *testing.T, resp *http.Response, err error) {
			var m map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&m)
			if m["openid"] == nil {
				t.Errorf("answer %v", m)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, base := newServer(t, emulator.Config{})
			tc.fault.Times = 1
			e.SetFault("/sns/jscode2session", tc.fault)
			q := url.Values{"appid": {appID}, "secret": {secret}, "js_code": {"fault-" + tc.name}, "grant_type": {"authorization_code"}}
			resp, err := client.Get(base + "/sns/jscode2session?" + q.Encode())
			if resp != nil {
				defer resp.Body.Close()
			}
			if err != nil && resp != nil {
				t.Fatal(err)
			}
			tc.check(t, resp, err)
			// Times: 1 — the next request is answered normally.
			if a := login(t, base, "after-"+tc.name); errcode(a) != 0 {
				t.Errorf("after the fault: %s", a.raw)
			}
			if n := e.Calls("/sns/jscode2session"); n != 2 {
				t.Errorf("calls = %d", n)
			}
		})
	}
}

// TestConcurrentLogins: a code used by 20 callers at once logs in once.
func TestConcurrentLogins(t *testing.T) {
	e, base := newServer(t, emulator.Config{})
	var wg sync.WaitGroup
	var ok atomic.Int32
	for range 20 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			q := url.Values{"appid": {appID}, "secret": {secret}, "js_code": {"same-code"}, "grant_type": {"authorization_code"}}
			req, _ := http.NewRequestWithContext(ctx, "GET", base+"/sns/jscode2session?"+q.Encode(), nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			if a := read(t, resp); errcode(a) == 0 {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if n := e.Calls("/sns/jscode2session"); n != 20 || ok.Load() != 1 {
		t.Errorf("%d calls, %d logins with one code; want 20 and exactly 1", n, ok.Load())
	}
}

// TestCloseAfterRead: the login is acted on (its code consumed) and the
// connection closed with no answer; CodeArrivals counts every arrival.
func TestCloseAfterRead(t *testing.T) {
	e, base := newServer(t, emulator.Config{})
	e.SetFault("/sns/jscode2session", emulator.Fault{CloseAfterRead: true, Times: 1})
	q := url.Values{"appid": {appID}, "secret": {secret}, "js_code": {"lost-answer"}, "grant_type": {"authorization_code"}}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(base + "/sns/jscode2session?" + q.Encode())
	if err == nil {
		resp.Body.Close()
		t.Fatal("a closed connection answered")
	}
	if a := login(t, base, "lost-answer"); errcode(a) != 40163 {
		t.Errorf("the code was not consumed: %s", a.raw)
	}
	if n := e.CodeArrivals("lost-answer"); n != 2 {
		t.Errorf("CodeArrivals = %d, want 2", n)
	}
}

func TestExpiresInFault(t *testing.T) {
	e, base := newServer(t, emulator.Config{})
	e.SetFault("/cgi-bin/stable_token", emulator.Fault{ExpiresIn: 1 << 40, Times: 1})
	a := stableToken(t, base, false)
	if a.body["expires_in"] != float64(1<<40) || a.body["access_token"] == nil {
		t.Errorf("answer %s", a.raw)
	}
	if b := stableToken(t, base, false); b.body["expires_in"].(float64) > 7200 || b.body["access_token"] != a.body["access_token"] {
		t.Errorf("after the fault: %s", b.raw)
	}
}
