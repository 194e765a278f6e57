// Package handlers is wxtoken's HTTP surface: the only code that knows echo.
// It binds and validates requests, calls the domain through the small
// interfaces declared here, and renders every failure as RFC 9457 problem
// details through one error handler.
package handlers

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/token"
	"github.com/wxtoken/wxtoken/wechat"
)

// WeChat is what the handlers need from WeChat's servers; *wechat.Client
// implements it.
type WeChat interface {
	Code2Session(ctx context.Context, app wechat.Credentials, code string) (wechat.Session, error)
	PhoneNumber(ctx context.Context, app wechat.Credentials, code, openid string) (wechat.PhoneInfo, error)
	CheckSession(ctx context.Context, app wechat.Credentials, openid string, sessionKey secret.String) (bool, error)
	ResetSessionKey(ctx context.Context, app wechat.Credentials, openid string, sessionKey secret.String) (secret.String, error)
	UserRiskRank(ctx context.Context, app wechat.Credentials, openid, clientIP string) (int, error)
}

// Tokens issues and verifies access tokens; *token.Service implements it.
type Tokens interface {
	Issue(ctx context.Context, id token.Identity) (token.Issued, error)
	Verify(ctx context.Context, raw string) (*token.Session, error)
}

// Apps finds a mini program's credentials by appid, per request, so one
// deployment can serve several mini programs.
type Apps interface {
	// Lookup returns the credentials of appid, or false when it is not served here.
	Lookup(appid string) (wechat.Credentials, bool)
	// Default is the appid used when a login names none; "" when several
	// apps are served, so that a login must name its app.
	Default() string
	// Policy is appid's token lifetime and risk check; the zero value
	// means the service's defaults.
	Policy(appid string) AppPolicy
}

// JWKS returns the published keys document and its ETag.
type JWKS func() (body []byte, etag string)

// Config gathers the handlers' dependencies and settings. Everything is
// passed in; nothing is read from the environment here.
type Config struct {
	Logger  *slog.Logger
	WeChat  WeChat
	Tokens  Tokens
	Apps    Apps
	JWKS    JWKS
	OpenAPI []byte
	// Ready reports whether the service can answer logins (keys loaded, not draining).
	Ready func() error
	// Dev turns on the dev-only routes (/dev/encrypt).
	Dev bool
	// LoginRate is logins per second per client IP (per /64 for IPv6); 0
	// turns the limit off.
	LoginRate  float64
	LoginBurst int
	// UserRate is calls per second per user (appid and openid) to the
	// authenticated routes that call WeChat (phone number, session check):
	// a token costs nothing to get, so without it one user could spend the
	// app's WeChat quota and upstream slots. 0 turns the limit off.
	UserRate  float64
	UserBurst int
	// AuthFailRate is failed bearer authentications (401s) per second per
	// client IP (per /64 for IPv6) before the client is refused with 429
	// without its token being checked: each forged ES256 token costs a
	// signature check. Valid tokens never draw from it. The same rate and
	// burst limit, per user, user data that fails to decrypt. 0 turns both
	// off.
	AuthFailRate  float64
	AuthFailBurst int
	// RequestTimeout bounds the work a request starts once its body is read
	// (the WeChat calls), so a slow WeChat gets a 504 problem before the
	// server's write timeout cuts the connection. 0 means no bound beyond
	// the client's own.
	RequestTimeout time.Duration
	// TrustedProxies lists the peers whose X-Forwarded-For is believed.
	TrustedProxies []*net.IPNet
	// JWKSMaxAge is the Cache-Control max-age of the JWKS.
	JWKSMaxAge time.Duration
	// Issuer is WXTOKEN_ISSUER, written byte for byte into the discovery
	// documents. Empty: no discovery routes.
	Issuer string
	// Algorithms lists the published keys' algorithms, for discovery.
	Algorithms func() []string
	Now        func() time.Time
	// Observer is told about every request and rate-limit refusal, for
	// metrics; nil: nothing.
	Observer Observer
	// Metrics, when set, is served at GET /metrics (the Prometheus
	// exposition); nil leaves the route out (metrics on another listener).
	Metrics http.Handler
}

// Route is one method and path the API serves, as registered: tests check
// the table against openapi.yaml without knowing echo.
type Route struct {
	Method string
	Path   string
}

// Handler is the whole HTTP API as an http.Handler, with its route table.
// The server package serves it with its own http.Server so timeouts and
// shutdown stay in one place, and echo stays inside this package.
type Handler struct {
	e      *echo.Echo
	routes []Route
}

// ServeHTTP serves one request through echo's router and middleware.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.e.ServeHTTP(w, r) }

// Routes is every method and path served, HEAD routes included; echo's
// internal not-found entries are left out.
func (h *Handler) Routes() []Route { return slices.Clone(h.routes) }

// New builds the API with every route.
func New(cfg Config) (*Handler, error) {
	if cfg.Logger == nil || cfg.WeChat == nil || cfg.Tokens == nil || cfg.Apps == nil || cfg.JWKS == nil {
		return nil, errors.New("handlers: logger, wechat, tokens, apps and jwks are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Ready == nil {
		cfg.Ready = func() error { return nil }
	}
	if cfg.Observer == nil {
		cfg.Observer = noObserver{}
	}
	if cfg.Issuer != "" && cfg.Algorithms == nil {
		return nil, errors.New("handlers: algorithms are required with an issuer")
	}
	// Every line logged with a request's context carries its id.
	cfg.Logger = slog.New(LogHandler(cfg.Logger.Handler()))
	h := &server{cfg: cfg, bind: newBinder()}

	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.Logger.SetOutput(discard{})
	e.HTTPErrorHandler = errorHandler(cfg.Logger)
	e.IPExtractor = ipExtractor(cfg.TrustedProxies)

	e.Use(h.frame)

	// Every GET route answers HEAD too (RFC 9110 9.3.2), for curl -I and
	// HEAD-based monitors; net/http drops the body of a HEAD answer.
	get := func(path string, handler echo.HandlerFunc) {
		e.Match([]string{http.MethodGet, http.MethodHead}, path, handler)
	}
	get("/healthz", h.healthz)
	get("/readyz", h.readyz)
	get("/.well-known/jwks.json", h.jwks)
	get("/openapi.yaml", h.openapi)
	if cfg.Metrics != nil {
		get("/metrics", echo.WrapHandler(cfg.Metrics))
	}
	if cfg.Issuer != "" {
		get("/.well-known/openid-configuration", h.openIDConfiguration)
		get("/.well-known/oauth-authorization-server", h.authorizationServerMetadata)
	}

	e.POST("/v1/login", h.login, h.loginLimiter())

	// The bearer middleware goes on each route, not on a group: a group
	// with an empty prefix would also guard unknown routes (401, not 404).
	bearer := h.bearer(h.authFailLimiter())
	decryptLimit := h.limitDecryptFailures()
	e.POST("/v1/decrypt", h.decrypt, bearer, decryptLimit)
	e.POST("/v1/userinfo", h.userinfo, bearer, decryptLimit)
	userLimit := h.userLimiter()
	e.POST("/v1/phone-number", h.phoneNumber, bearer, userLimit)
	e.POST("/v1/session/check", h.sessionCheck, bearer, userLimit)
	e.POST("/v1/session/reset", h.sessionReset, bearer, userLimit)
	if cfg.Dev {
		e.POST("/dev/encrypt", h.devEncrypt, bearer)
	}
	h.routes = routeSet(e)
	var table []Route
	for _, r := range e.Routes() {
		if strings.HasPrefix(r.Method, "echo_") {
			continue
		}
		table = append(table, Route{Method: r.Method, Path: r.Path})
	}
	return &Handler{e: e, routes: table}, nil
}

type server struct {
	cfg  Config
	bind *binder
	// routes are the registered route patterns, the only route labels.
	routes map[string]bool
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// loginLimiter is a token bucket per client (see keyedLimiter: bounded
// memory, IPv6 per /64 and per /48). Over the limit: 429 with Retry-After.
func (h *server) loginLimiter() echo.MiddlewareFunc {
	if h.cfg.LoginRate <= 0 {
		return func(next echo.HandlerFunc) echo.HandlerFunc { return next }
	}
	l := newKeyedLimiter(limiterEntries, h.cfg.LoginRate, h.cfg.LoginBurst, h.cfg.Now)
	return h.limitBy(LimiterLogin, func(c echo.Context) bool { return l.allowClient(c.RealIP()) }, l.retryAfter(),
		"Too many logins from this address. Retry later.")
}

// userLimiter is a token bucket per user; it runs after the bearer
// middleware, which put the verified session in the context.
func (h *server) userLimiter() echo.MiddlewareFunc {
	if h.cfg.UserRate <= 0 {
		return func(next echo.HandlerFunc) echo.HandlerFunc { return next }
	}
	l := newKeyedLimiter(limiterEntries, h.cfg.UserRate, h.cfg.UserBurst, h.cfg.Now)
	return h.limitBy(LimiterUser, func(c echo.Context) bool {
		s := sessionOf(c)
		return l.allow(userKey(s))
	}, l.retryAfter(), "Too many calls for this user. Retry later.")
}

// plainID reports whether a caller's request id is short and plain enough
// to keep.
func plainID(id string) bool {
	if len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		ch := id[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_' || ch == '.') {
			return false
		}
	}
	return true
}

// work is the context for the WeChat calls a request makes, bounded by
// RequestTimeout from now: handlers take it after reading the body, so a
// client slow to send its body does not eat WeChat's time.
func (h *server) work(c echo.Context) (context.Context, context.CancelFunc) {
	if h.cfg.RequestTimeout <= 0 {
		return context.WithCancel(c.Request().Context())
	}
	return context.WithTimeout(c.Request().Context(), h.cfg.RequestTimeout)
}

func (h *server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (h *server) readyz(c echo.Context) error {
	if err := h.cfg.Ready(); err != nil {
		return kindUnavailable.problem("Not ready: " + err.Error()).withRetryAfter(time.Second)
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

func (h *server) openapi(c echo.Context) error {
	if len(h.cfg.OpenAPI) == 0 {
		return kindNotFound.problem("No OpenAPI document is bundled.")
	}
	return c.Blob(http.StatusOK, "application/yaml", h.cfg.OpenAPI)
}
