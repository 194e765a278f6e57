package handlers

import (
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/wxtoken/wxtoken/token"
	"github.com/wxtoken/wxtoken/wechat"
)

const (
	sessionKey = "wxtoken.session"
	appKey     = "wxtoken.app"
)

// bearer authenticates a route with the access token (RFC 6750). A missing
// token answers a bare challenge; a bad one adds error="invalid_token".
// Several Authorization headers are a malformed request (400,
// error="invalid_request"): picking one silently would let a proxy and
// wxtoken disagree on who the caller is.
//
// A token the service has already verified and still caches is answered
// from the cache and touches no limiter: that is the hot path of every
// bearer call. Any other token costs a signature check, so it first takes
// one from the client's budget of failed authentications (failLimit, when
// set) and gives it back unless the answer is a 401. Taking up front, not
// after the check, keeps concurrent forgeries from all passing the check
// before any of them is counted; many users behind one carrier NAT share an
// address, and because good cached tokens never reach the budget, one of
// them forging tokens cannot lock the others out.
func (h *server) bearer(failLimit *keyedLimiter) echo.MiddlewareFunc {
	cache, _ := h.cfg.Tokens.(tokenCache)
	var retry time.Duration
	if failLimit != nil {
		retry = failLimit.retryAfter()
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			hdr := c.Request().Header
			authorization := hdr.Values(echo.HeaderAuthorization)
			if len(authorization) > 1 {
				p := kindInvalidRequest.problemf("Send one Authorization header; this request has %d.", len(authorization))
				p.wwwAuthenticate = `Bearer realm="wxtoken", error="invalid_request", error_description="more than one Authorization header"`
				return p
			}
			raw, given := "", false
			if len(authorization) == 1 {
				raw, given = bearerToken(authorization[0])
			}
			if cache != nil && raw != "" {
				if sess, ok := cache.Lookup(raw); ok {
					if app, ok := h.cfg.Apps.Lookup(sess.AppID); ok {
						return h.authenticated(c, next, sess, app)
					}
				}
			}
			var refund taken
			if failLimit != nil {
				var ok bool
				if refund, ok = failLimit.takeClient(c.RealIP()); !ok {
					h.cfg.Observer.RateLimited(LimiterAuthFail)
					return kindRateLimited.problem("Too many failed authentications from this address. " +
						"Log in again for a fresh token, then retry.").withRetryAfter(retry)
				}
			}
			sess, app, err := h.authenticate(c, raw, given)
			if !unauthorized(err) {
				refund.refund()
			}
			if err != nil {
				return err
			}
			return h.authenticated(c, next, sess, app)
		}
	}
}

// authenticate checks a token that is not in the cache: a 401 problem when
// it is missing, malformed, invalid or for an app no longer served here (a
// good signature does not help a token whose app was taken away).
func (h *server) authenticate(c echo.Context, raw string, given bool) (*token.Session, wechat.Credentials, error) {
	if !given {
		p := kindUnauthorized.problem("Send the access token from /v1/login as Authorization: Bearer <token>.")
		p.wwwAuthenticate = `Bearer realm="wxtoken"`
		return nil, wechat.Credentials{}, p
	}
	if raw == "" {
		return nil, wechat.Credentials{}, invalidToken(token.ErrInvalid)
	}
	ctx := c.Request().Context()
	sess, err := h.cfg.Tokens.Verify(ctx, raw)
	if err != nil {
		h.cfg.Logger.InfoContext(ctx, "token refused", "reason", reasonOf(err))
		return nil, wechat.Credentials{}, invalidToken(err)
	}
	app, ok := h.cfg.Apps.Lookup(sess.AppID)
	if !ok {
		h.cfg.Logger.InfoContext(ctx, "token refused", "reason", "audience is not an app served here")
		return nil, wechat.Credentials{}, invalidToken(token.ErrInvalid)
	}
	return sess, app, nil
}

// authenticated runs the route for the verified session of app.
func (h *server) authenticated(c echo.Context, next echo.HandlerFunc, sess *token.Session, app wechat.Credentials) error {
	c.Set(sessionKey, sess)
	c.Set(appKey, app)
	return next(c)
}

// tokenCache is what a token service may offer to answer, without checking
// a signature, a token it verified before (*token.Service does).
type tokenCache interface {
	Lookup(raw string) (*token.Session, bool)
}

// bearerToken takes the token out of an Authorization header. The scheme is
// case-insensitive; the token must be a single b64token (RFC 6750 2.1).
// given is false when no Bearer credentials were sent at all; raw is empty
// when they were sent but are malformed.
func bearerToken(header string) (raw string, given bool) {
	scheme, rest, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	raw = strings.TrimLeft(rest, " ")
	if raw == "" {
		return "", true
	}
	for i := 0; i < len(raw); i++ {
		if !isB64token(raw[i]) {
			return "", true
		}
	}
	return raw, true
}

// The bytes of RFC 6750's b64token (letters, digits and "-._~+/="), as bit
// sets of the ASCII codes below and from 64: every bearer call checks every
// byte of its token (about 700) before anything else, and a bit test is the
// cheapest check (TestB64tokenSet checks the sets against the definition).
const (
	b64tokenLow  = 0x23ffe80000000000
	b64tokenHigh = 0x47fffffe87fffffe
)

func isB64token(ch byte) bool {
	switch {
	case ch < 64:
		return b64tokenLow>>ch&1 == 1
	case ch < 128:
		return b64tokenHigh>>(ch-64)&1 == 1
	}
	return false
}

// reasonOf keeps a verification failure's reason for logs without the token:
// the wrapped messages of package token never contain token bytes.
func reasonOf(err error) string {
	const max = 200
	s := err.Error()
	if len(s) > max {
		s = s[:max]
	}
	return s
}

func sessionOf(c echo.Context) *token.Session {
	s, _ := c.Get(sessionKey).(*token.Session)
	return s
}

// credentials is the app the bearer middleware found for the request's token.
func credentials(c echo.Context) wechat.Credentials {
	app, _ := c.Get(appKey).(wechat.Credentials)
	return app
}
