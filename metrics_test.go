package main

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/emulator"
)

// series is one sample of a scrape: the metric name, its labels and value.
type series struct {
	name   string
	labels map[string]string
	value  float64
}

var seriesLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// parseScrape reads the Prometheus text format into samples.
func parseScrape(t testing.TB, body string) []series {
	t.Helper()
	var out []series
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := seriesLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("not a sample line: %q", line)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("sample value %q: %v", m[3], err)
		}
		s := series{name: m[1], labels: map[string]string{}, value: v}
		for _, p := range labelPair.FindAllStringSubmatch(m[2], -1) {
			s.labels[p[1]] = p[2]
		}
		out = append(out, s)
	}
	return out
}

// value sums the samples of name whose labels include want; found is
// false when there is none.
func value(all []series, name string, want map[string]string) (sum float64, found bool) {
next:
	for _, s := range all {
		if s.name != name {
			continue
		}
		for k, v := range want {
			if s.labels[k] != v {
				continue next
			}
		}
		sum += s.value
		found = true
	}
	return sum, found
}

func scrape(t testing.TB, url string) (string, []series) {
	t.Helper()
	c := do(t, http.MethodGet, url, "", "", nil)
	if c.Status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, c.Status, c.Body)
	}
	return string(c.Body), parseScrape(t, string(c.Body))
}

// subOf is the sub claim of a token (the openid), read without verifying.
func subOf(t testing.TB, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct{ Sub string }
	if err := json.Unmarshal(b, &c); err != nil || c.Sub == "" {
		t.Fatalf("token has no sub: %v", err)
	}
	return c.Sub
}

// TestMetricsScrape drives a real server through the events issue 13.1
// names and reads them back from /metrics: requests by route pattern, the
// WeChat calls with their errcodes, access_token refreshes, token
// verifications (cold, then cached), a limiter refusal, a key reload and
// the active key's age. No request data reaches a label.
func TestMetricsScrape(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	s := startServer(t, f.env.with(
		"WXTOKEN_LOGIN_RATE", "0.001", "WXTOKEN_LOGIN_BURST", "3",
		"WXTOKEN_RELOAD_INTERVAL", "100ms"))

	const code = "metrics-login-code-0123456789abcdef"
	tok, _ := login(t, s.URL, code)
	openid := subOf(t, tok)
	for i := range 2 { // cold, then from the verified-token cache
		if c := postJSON(t, s.URL+"/v1/session/check", tok, nil); c.Status != http.StatusOK {
			t.Fatalf("session check %d: %d %s", i, c.Status, c.Body)
		}
	}
	randomPath := "/no-such-route-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if c := do(t, http.MethodGet, s.URL+randomPath, "", "", nil); c.Status != http.StatusNotFound {
		t.Fatalf("GET %s: %d", randomPath, c.Status)
	}
	// WeChat refuses a login code (40163) and answers a phone code with an
	// errcode it does not document.
	if c := postJSON(t, s.URL+"/v1/login", "", map[string]string{"code": "err-40163"}); c.Status == http.StatusOK {
		t.Fatalf("login with a used code: %d", c.Status)
	}
	f.emu.SetFault("/wxa/business/getuserphonenumber", emulator.Fault{Errcode: 61999})
	const phoneCode = "metrics-phone-code-0123456789abcdef"
	if c := postJSON(t, s.URL+"/v1/phone-number", tok, map[string]string{"code": phoneCode}); c.Status == http.StatusOK {
		t.Fatalf("phone number under a fault: %d", c.Status)
	}
	// An app this deployment does not serve: refused, and its appid must
	// not become a label.
	const foreignApp = "wxforeignapp0000099"
	if c := postJSON(t, s.URL+"/v1/login", "", map[string]string{"code": "x-0123456789", "appid": foreignApp}); c.Status == http.StatusOK {
		t.Fatal("login for a foreign app succeeded")
	}
	// A token that is no JWS: a verification failure.
	if c := postJSON(t, s.URL+"/v1/session/check", "x.y.z", nil); c.Status != http.StatusUnauthorized {
		t.Fatalf("forged token: %d", c.Status)
	}
	// The login limiter's burst (3) is spent by now: the next login is refused.
	if c := postJSON(t, s.URL+"/v1/login", "", map[string]string{"code": "over-the-limit-0001"}); c.Status != http.StatusTooManyRequests {
		t.Fatalf("login over the limit: %d %s", c.Status, c.Body)
	}
	// A rotation on disk is picked up by the poll: a key reload.
	mustRun(t, f.env, "keys", "rotate")

	var body string
	var all []series
	eventually(t, 10*time.Second, "a key reload counted after a rotation", func() bool {
		body, all = scrape(t, s.URL+"/metrics")
		n, _ := value(all, "wxtoken_key_reloads_total", map[string]string{"outcome": "ok"})
		return n >= 1
	})

	atLeast := []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"wxtoken_http_requests_total", map[string]string{"route": "/v1/login", "method": "POST", "status": "200"}, 1},
		{"wxtoken_http_requests_total", map[string]string{"route": "/v1/session/check", "method": "POST", "status": "200"}, 2},
		{"wxtoken_http_requests_total", map[string]string{"route": "unmatched", "method": "GET", "status": "404"}, 1},
		{"wxtoken_http_requests_total", map[string]string{"route": "/v1/login", "status": "429"}, 1},
		{"wxtoken_http_request_duration_seconds_count", map[string]string{"route": "/v1/session/check", "status": "200"}, 2},
		{"wxtoken_wechat_calls_total", map[string]string{"api": "jscode2session", "errcode": "0"}, 1},
		{"wxtoken_wechat_calls_total", map[string]string{"api": "jscode2session", "errcode": "40163"}, 1},
		{"wxtoken_wechat_calls_total", map[string]string{"api": "checksession", "errcode": "0"}, 2},
		{"wxtoken_wechat_calls_total", map[string]string{"api": "stable_token", "errcode": "0"}, 1},
		{"wxtoken_wechat_calls_total", map[string]string{"api": "getuserphonenumber", "errcode": "other"}, 1},
		{"wxtoken_wechat_call_duration_seconds_count", map[string]string{"api": "jscode2session"}, 2},
		{"wxtoken_wechat_access_token_refreshes_total", map[string]string{"outcome": "ok"}, 1},
		{"wxtoken_token_verifications_total", map[string]string{"outcome": "ok"}, 1},
		{"wxtoken_token_verifications_total", map[string]string{"outcome": "cached"}, 1},
		{"wxtoken_token_verifications_total", map[string]string{"outcome": "malformed"}, 1},
		{"wxtoken_rate_limited_total", map[string]string{"limiter": "login"}, 1},
		{"wxtoken_key_reloads_total", map[string]string{"outcome": "ok"}, 1},
		{"wxtoken_signing_key_age_seconds", nil, 0},
		{"wxtoken_wechat_circuit_breaker_state", map[string]string{"breaker": "wechat " + testAppID}, 0},
		{"go_goroutines", nil, 1},
		{"process_open_fds", nil, 1},
	}
	for _, w := range atLeast {
		got, found := value(all, w.name, w.labels)
		if !found || got < w.min {
			t.Errorf("%s%v = %v (found %v), want at least %v", w.name, w.labels, got, found, w.min)
		}
	}
	if got, _ := value(all, "wxtoken_wechat_circuit_breaker_state", map[string]string{"breaker": "wechat " + testAppID}); got != 0 {
		t.Errorf("breaker state %v, want 0 (closed)", got)
	}
	// The two checks of one token: one full verification, then the cache.
	if ok, _ := value(all, "wxtoken_token_verifications_total", map[string]string{"outcome": "ok"}); ok != 1 {
		t.Errorf("full verifications = %v, want 1 (the second check is cached)", ok)
	}

	for what, secret := range map[string]string{
		"raw path": strings.TrimPrefix(randomPath, "/"), "openid": openid, "login code": code,
		"phone code": phoneCode, "token": tok, "token signature": tok[strings.LastIndexByte(tok, '.')+1:],
		"appsecret": testSecret, "refused appid": foreignApp,
	} {
		if strings.Contains(body, secret) {
			t.Errorf("the scrape contains the %s", what)
		}
	}
	// Every label value comes from a fixed set: routes are patterns.
	for _, s := range all {
		if r, ok := s.labels["route"]; ok && r != "unmatched" && !strings.HasPrefix(r, "/") {
			t.Errorf("route label %q is neither a pattern nor unmatched", r)
		}
	}
}

// TestMetricsOnSeparateListener: with WXTOKEN_METRICS_ADDR the metrics
// move to their own listener, which serves nothing else, and the main one
// answers 404 for /metrics.
func TestMetricsOnSeparateListener(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	s := startServer(t, f.env.with("WXTOKEN_METRICS_ADDR", "127.0.0.1:0"))
	if c := do(t, http.MethodGet, s.URL+"/metrics", "", "", nil); c.Status != http.StatusNotFound {
		t.Fatalf("main listener /metrics: %d, want 404", c.Status)
	}
	addr := metricsAddr(t, s)
	body, all := scrape(t, "http://"+addr+"/metrics")
	// The main listener's 404 above is counted, and seen here.
	if n, _ := value(all, "wxtoken_http_requests_total", map[string]string{"route": "/metrics", "status": "404"}); n != 0 {
		t.Errorf("/metrics counted as a route on the main listener:\n%s", body)
	}
	if n, _ := value(all, "wxtoken_http_requests_total", map[string]string{"route": "unmatched", "status": "404"}); n != 1 {
		t.Errorf("main listener's 404 not counted as unmatched:\n%s", body)
	}
	for _, path := range []string{"/healthz", "/debug/pprof/", "/debug/pprof/heap"} {
		if c := do(t, http.MethodGet, "http://"+addr+path, "", "", nil); c.Status != http.StatusNotFound {
			t.Errorf("metrics listener without WXTOKEN_PPROF serves %s: %d", path, c.Status)
		}
	}
}

// metricsAddr is the address the server logged for its metrics listener.
func metricsAddr(t *testing.T, s *running) string {
	t.Helper()
	var addr string
	eventually(t, 5*time.Second, "the metrics listener is logged", func() bool {
		for _, line := range strings.Split(s.logs.String(), "\n") {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "metrics listening" {
				addr = rec.Addr
			}
		}
		return addr != ""
	})
	return addr
}

// TestPprofOnMetricsListener: WXTOKEN_PPROF serves Go's profiles on the
// metrics listener only; the API's listener never answers them.
func TestPprofOnMetricsListener(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	s := startServer(t, f.env.with("WXTOKEN_METRICS_ADDR", "127.0.0.1:0", "WXTOKEN_PPROF", "true"))
	addr := metricsAddr(t, s)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap?debug=1", "/debug/pprof/goroutine?debug=1", "/debug/pprof/profile?seconds=1"} {
		if c := do(t, http.MethodGet, "http://"+addr+path, "", "", nil); c.Status != http.StatusOK || len(c.Body) == 0 {
			t.Errorf("metrics listener %s: %d, %d bytes", path, c.Status, len(c.Body))
		}
		if c := do(t, http.MethodGet, s.URL+path, "", "", nil); c.Status != http.StatusNotFound {
			t.Errorf("API listener %s: %d, want 404", path, c.Status)
		}
	}
}

// TestMetricsAddrIsValidated: a malformed address, or the main one, is a
// configuration problem.
func TestMetricsAddrIsValidated(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  env
		want string
	}{
		{env{"WXTOKEN_METRICS_ADDR": "not-an-address"}, "WXTOKEN_METRICS_ADDR must be a listen address"},
		{env{"WXTOKEN_METRICS_ADDR": "127.0.0.1:99999"}, "WXTOKEN_METRICS_ADDR must be a listen address"},
		{env{"WXTOKEN_ADDR": ":9090", "WXTOKEN_METRICS_ADDR": ":9090"}, "WXTOKEN_METRICS_ADDR must differ"},
		{env{"WXTOKEN_METRICS_ADDR": "127.0.0.1:9090"}, ""},
		{env{"WXTOKEN_PPROF": "true"}, "WXTOKEN_PPROF needs WXTOKEN_METRICS_ADDR"},
		{env{"WXTOKEN_PPROF": "yes please", "WXTOKEN_METRICS_ADDR": "127.0.0.1:9090"}, "WXTOKEN_PPROF must be true or false"},
		{env{"WXTOKEN_PPROF": "true", "WXTOKEN_METRICS_ADDR": "127.0.0.1:9090"}, ""},
	} {
		err := loadConfig(tc.env.getenv).validate()
		if tc.want == "" && err != nil {
			t.Errorf("%v: %v", tc.env, err)
		}
		if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%v: %v, want %q", tc.env, err, tc.want)
		}
	}
}
