package metrics_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxtoken/wxtoken/keys"
	"github.com/wxtoken/wxtoken/metrics"
	"github.com/wxtoken/wxtoken/token"
	"github.com/wxtoken/wxtoken/wechat"
)

func newMetrics(t *testing.T, cfg metrics.Config) *metrics.Metrics {
	t.Helper()
	m, err := metrics.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestLabelsAreBounded: whatever the observers are given, label values
// come from fixed sets: an unknown errcode is "other", a failure without
// an answer "error", an unmatched route "unmatched", an odd method "other".
func TestLabelsAreBounded(t *testing.T) {
	m := newMetrics(t, metrics.Config{})
	m.WeChatCall(wechat.OpCode2Session, nil, time.Millisecond)
	m.WeChatCall(wechat.OpCode2Session, &wechat.APIError{Op: wechat.OpCode2Session, Code: wechat.CodeCodeUsed}, time.Millisecond)
	m.WeChatCall(wechat.OpCode2Session, fmt.Errorf("wrapped: %w", &wechat.APIError{Code: wechat.CodeRateLimited}), time.Millisecond)
	for code := 1; code <= 50; code++ { // codes WeChat never documented
		m.WeChatCall(wechat.OpPhoneNumber, &wechat.APIError{Code: 70000 + code}, time.Millisecond)
	}
	m.WeChatCall(wechat.OpStableToken, &wechat.UpstreamError{Op: wechat.OpStableToken, Kind: wechat.Timeout}, time.Second)
	m.Request("", "GET", 404, time.Millisecond)
	m.Request("", "BREW", 405, time.Millisecond)
	m.Request("/v1/login", "POST", 200, time.Millisecond)

	exp := `
# HELP wxtoken_wechat_calls_total Requests sent to WeChat, by API and errcode ("0" success, "other" an unlisted code, "error" no usable answer).
# TYPE wxtoken_wechat_calls_total counter
wxtoken_wechat_calls_total{api="getuserphonenumber",errcode="other"} 50
wxtoken_wechat_calls_total{api="jscode2session",errcode="0"} 1
wxtoken_wechat_calls_total{api="jscode2session",errcode="40163"} 1
wxtoken_wechat_calls_total{api="jscode2session",errcode="45011"} 1
wxtoken_wechat_calls_total{api="stable_token",errcode="error"} 1
# HELP wxtoken_http_requests_total HTTP requests answered, by route pattern, method and status.
# TYPE wxtoken_http_requests_total counter
wxtoken_http_requests_total{method="GET",route="unmatched",status="404"} 1
wxtoken_http_requests_total{method="POST",route="/v1/login",status="200"} 1
wxtoken_http_requests_total{method="other",route="unmatched",status="405"} 1
`
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(exp),
		"wxtoken_wechat_calls_total", "wxtoken_http_requests_total"); err != nil {
		t.Error(err)
	}
}

// TestOutcomes: refreshes, reloads, verifications, refusals and breaker
// states land on their labels.
func TestOutcomes(t *testing.T) {
	m := newMetrics(t, metrics.Config{})
	m.AccessTokenRefresh(nil)
	m.AccessTokenRefresh(&wechat.APIError{Code: wechat.CodeInvalidAppSecret})
	m.AccessTokenRefresh(&wechat.UpstreamError{Kind: wechat.Unreachable})
	m.KeyReload(nil)
	m.KeyReload(fmt.Errorf("load: %w", keys.ErrReadTimeout))
	m.KeyReload(keys.ErrNoKeys)
	m.KeyReload(errors.New("bad manifest"))
	m.Verified(token.OutcomeCached)
	m.Verified(token.OutcomeUnknownKID)
	m.RateLimited("auth_fail")
	m.BreakerState("wechat", wechat.BreakerOpen)

	exp := `
# HELP wxtoken_key_reloads_total Loads of the keys directory that read it, by outcome: ok, error, timeout.
# TYPE wxtoken_key_reloads_total counter
wxtoken_key_reloads_total{outcome="error"} 2
wxtoken_key_reloads_total{outcome="ok"} 1
wxtoken_key_reloads_total{outcome="timeout"} 1
# HELP wxtoken_wechat_access_token_refreshes_total access_token fetches (retries included), by outcome: ok, refused (WeChat answered an errcode), error.
# TYPE wxtoken_wechat_access_token_refreshes_total counter
wxtoken_wechat_access_token_refreshes_total{outcome="error"} 1
wxtoken_wechat_access_token_refreshes_total{outcome="ok"} 1
wxtoken_wechat_access_token_refreshes_total{outcome="refused"} 1
# HELP wxtoken_rate_limited_total Requests refused with 429 by a rate limiter, by limiter.
# TYPE wxtoken_rate_limited_total counter
wxtoken_rate_limited_total{limiter="auth_fail"} 1
# HELP wxtoken_wechat_circuit_breaker_state State of a circuit breaker in front of WeChat: 0 closed, 1 half-open, 2 open.
# TYPE wxtoken_wechat_circuit_breaker_state gauge
wxtoken_wechat_circuit_breaker_state{breaker="wechat"} 2
`
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(exp), "wxtoken_key_reloads_total",
		"wxtoken_wechat_access_token_refreshes_total", "wxtoken_rate_limited_total", "wxtoken_wechat_circuit_breaker_state"); err != nil {
		t.Error(err)
	}
	// Every verification outcome is shown from the start, at zero or more.
	n, err := testutil.GatherAndCount(m.Gatherer(), "wxtoken_token_verifications_total")
	if err != nil || n != len(token.Outcomes()) {
		t.Errorf("verification series = %d (%v), want %d", n, err, len(token.Outcomes()))
	}
}

// TestSigningKeyAgeIsReadAtScrape: the age follows the key source at each
// scrape, not a value set once.
func TestSigningKeyAgeIsReadAtScrape(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	since := now.Add(-time.Hour)
	m := newMetrics(t, metrics.Config{SigningKeySince: func() time.Time { return since }, Now: func() time.Time { return now }})
	check := func(want string) {
		t.Helper()
		exp := "# HELP wxtoken_signing_key_age_seconds Time since the active signing key became active (its creation when the manifest has no activation time).\n" +
			"# TYPE wxtoken_signing_key_age_seconds gauge\nwxtoken_signing_key_age_seconds " + want + "\n"
		if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(exp), "wxtoken_signing_key_age_seconds"); err != nil {
			t.Error(err)
		}
	}
	check("3600")
	since = now.Add(-time.Minute) // a rotation
	check("60")
}

// TestHandlerServesOwnRegistry: the handler serves this registry with the
// Go and process collectors, and nothing from the global registry.
func TestHandlerServesOwnRegistry(t *testing.T) {
	srv := httptest.NewServer(newMetrics(t, metrics.Config{}).Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	body := string(raw)
	for _, want := range []string{"go_goroutines", "process_cpu_seconds_total", "wxtoken_token_verifications_total"} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
	if strings.Contains(body, "promhttp_metric_handler_requests_total") {
		t.Error("scrape carries the global registry's handler metrics")
	}
}

// BenchmarkObserve is the cost the observers add to a request: one
// answered request and one WeChat call.
func BenchmarkObserve(b *testing.B) {
	m, err := metrics.New(metrics.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		m.Request("/v1/session/check", http.MethodPost, 200, time.Millisecond)
		m.WeChatCall(wechat.OpCheckSession, nil, time.Millisecond)
	}
}
