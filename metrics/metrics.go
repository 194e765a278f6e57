// Package metrics is wxtoken's Prometheus instrumentation, and the only
// importer of client_golang. The domain packages (wechat, keys, token,
// handlers) know nothing of Prometheus: they call small observer methods,
// which *Metrics implements, and this package turns their arguments into
// label values from fixed sets, so no request can add a series (no raw
// paths, openids, codes or appids from requests).
package metrics

import (
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wxtoken/wxtoken/keys"
	"github.com/wxtoken/wxtoken/token"
	"github.com/wxtoken/wxtoken/wechat"
)

// UnmatchedRoute is the route label of requests that matched no route, so
// scanners probing random paths add no series.
const UnmatchedRoute = "unmatched"

// Label values for outcomes outside the known sets.
const (
	otherLabel = "other"
	errorLabel = "error"
)

// knownErrcodes are the WeChat errcodes kept as their own label value; any
// other becomes "other", so a WeChat that invents codes cannot grow the
// series without bound. They are the codes WeChat documents for the APIs
// wxtoken calls (see shared/docs/wechat-api.md), 0 included.
var knownErrcodes = map[int]bool{
	0:                             true,
	wechat.CodeBusy:               true,
	wechat.CodeInvalidCredential:  true,
	40003:                         true, // invalid openid
	wechat.CodeInvalidAppID:       true,
	wechat.CodeInvalidAccessToken: true,
	wechat.CodeInvalidCode:        true,
	wechat.CodeInvalidAppSecret:   true,
	wechat.CodeCodeUsed:           true,
	wechat.CodeHighRisk:           true,
	41003:                         true, // missing parameter
	wechat.CodeTokenExpired:       true,
	wechat.CodeRateLimited:        true,
	47001:                         true, // malformed request body
	wechat.CodeInvalidSignature:   true,
}

// knownMethods bounds the method label: a client can send any token as
// a method.
var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
}

// Config is what New needs.
type Config struct {
	// SigningKeySince reads, at scrape time, when the active signing key
	// became active; nil leaves the key age metric out.
	SigningKeySince func() time.Time
	// Now is the clock for the key age; nil means time.Now.
	Now func() time.Time
}

// Metrics holds wxtoken's collectors on a registry of its own (never the
// global one), with the Go runtime and process collectors beside them.
type Metrics struct {
	reg *prometheus.Registry

	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	wechatCalls     *prometheus.CounterVec
	wechatDuration  *prometheus.HistogramVec
	tokenRefreshes  *prometheus.CounterVec
	breakerState    *prometheus.GaugeVec
	keyReloads      *prometheus.CounterVec
	verifications   *prometheus.CounterVec
	rateLimited     *prometheus.CounterVec

	// series keeps the request series already resolved, by requestKey:
	// every request records one, and resolving its labels (hashing three
	// strings under the vectors' locks, twice) cost more than recording.
	// Bounded like the labels: routes, methods and statuses are few.
	series sync.Map
}

// requestKey names the series of one kind of answered request.
type requestKey struct {
	route, method string
	status        int
}

// requestSeries are the counter and histogram of one requestKey.
type requestSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// New builds the collectors and registers them.
func New(cfg Config) (*Metrics, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxtoken_http_requests_total",
			Help: "HTTP requests answered, by route pattern, method and status.",
		}, []string{"route", "method", "status"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wxtoken_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route pattern, method and status.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route", "method", "status"}),
		wechatCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxtoken_wechat_calls_total",
			Help: `Requests sent to WeChat, by API and errcode ("0" success, "other" an unlisted code, "error" no usable answer).`,
		}, []string{"api", "errcode"}),
		wechatDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wxtoken_wechat_call_duration_seconds",
			Help:    "Time of one request to WeChat, by API.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"api"}),
		tokenRefreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxtoken_wechat_access_token_refreshes_total",
			Help: `access_token fetches (retries included), by outcome: ok, refused (WeChat answered an errcode), error.`,
		}, []string{"outcome"}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxtoken_wechat_circuit_breaker_state",
			Help: "State of a circuit breaker in front of WeChat: 0 closed, 1 half-open, 2 open.",
		}, []string{"breaker"}),
		keyReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxtoken_key_reloads_total",
			Help: "Loads of the keys directory that read it, by outcome: ok, error, timeout.",
		}, []string{"outcome"}),
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxtoken_token_verifications_total",
			Help: "Access token verifications, by outcome.",
		}, []string{"outcome"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxtoken_rate_limited_total",
			Help: "Requests refused with 429 by a rate limiter, by limiter.",
		}, []string{"limiter"}),
	}
	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.requestDuration, m.wechatCalls, m.wechatDuration, m.tokenRefreshes,
		m.breakerState, m.keyReloads, m.verifications, m.rateLimited,
	}
	if cfg.SigningKeySince != nil {
		since, now := cfg.SigningKeySince, cfg.Now
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wxtoken_signing_key_age_seconds",
			Help: "Time since the active signing key became active (its creation when the manifest has no activation time).",
		}, func() float64 { return now().Sub(since()).Seconds() }))
	}
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Outcomes are known in advance: showing them at zero lets rate() see
	// the first increase and alerts tell "none yet" from "not scraped".
	for _, o := range token.Outcomes() {
		m.verifications.WithLabelValues(string(o))
	}
	for _, o := range []string{"ok", "refused", errorLabel} {
		m.tokenRefreshes.WithLabelValues(o)
	}
	for _, o := range []string{"ok", errorLabel, "timeout"} {
		m.keyReloads.WithLabelValues(o)
	}
	return m, nil
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Gatherer is the registry, for tests.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Request records one answered HTTP request (handlers.Observer). route is
// echo's route pattern; "" (no route matched) becomes UnmatchedRoute.
func (m *Metrics) Request(route, method string, status int, took time.Duration) {
	if route == "" {
		route = UnmatchedRoute
	}
	if !knownMethods[method] {
		method = otherLabel
	}
	k := requestKey{route, method, status}
	v, ok := m.series.Load(k)
	if !ok {
		s := strconv.Itoa(status)
		v, _ = m.series.LoadOrStore(k, &requestSeries{
			count:    m.requests.WithLabelValues(route, method, s),
			duration: m.requestDuration.WithLabelValues(route, method, s),
		})
	}
	rs := v.(*requestSeries)
	rs.count.Inc()
	rs.duration.Observe(took.Seconds())
}

// RateLimited records a 429 from the named limiter (handlers.Observer);
// the names are the handlers' constants.
func (m *Metrics) RateLimited(limiter string) {
	m.rateLimited.WithLabelValues(limiter).Inc()
}

// WeChatCall records one request sent to WeChat (wechat.Observer). api is
// one of package wechat's operation constants, never request data.
func (m *Metrics) WeChatCall(api string, err error, took time.Duration) {
	m.wechatCalls.WithLabelValues(api, errcodeLabel(err)).Inc()
	m.wechatDuration.WithLabelValues(api).Observe(took.Seconds())
}

// AccessTokenRefresh records one access_token fetch (wechat.Observer).
func (m *Metrics) AccessTokenRefresh(err error) {
	outcome := "ok"
	var ae *wechat.APIError
	switch {
	case errors.As(err, &ae):
		outcome = "refused"
	case err != nil:
		outcome = errorLabel
	}
	m.tokenRefreshes.WithLabelValues(outcome).Inc()
}

// BreakerState records a circuit breaker's state (wechat.Observer).
func (m *Metrics) BreakerState(breaker string, state wechat.BreakerState) {
	m.breakerState.WithLabelValues(breaker).Set(float64(state))
}

// KeyReload records one load of the keys directory (keys.Store.OnReload).
func (m *Metrics) KeyReload(err error) {
	outcome := "ok"
	switch {
	case errors.Is(err, keys.ErrReadTimeout):
		outcome = "timeout"
	case err != nil:
		outcome = errorLabel
	}
	m.keyReloads.WithLabelValues(outcome).Inc()
}

// Verified records one token verification (token.Config.Observe).
func (m *Metrics) Verified(o token.Outcome) {
	m.verifications.WithLabelValues(string(o)).Inc()
}

// errcodeLabel is WeChat's errcode as a bounded label: nil is "0", an
// errcode in knownErrcodes itself, any other "other", and a call with no
// usable answer (transport failure, bad status, not JSON) "error".
func errcodeLabel(err error) string {
	if err == nil {
		return "0"
	}
	var ae *wechat.APIError
	if !errors.As(err, &ae) {
		return errorLabel
	}
	if knownErrcodes[ae.Code] {
		return strconv.Itoa(ae.Code)
	}
	return otherLabel
}
