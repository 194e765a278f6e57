package handlers

import (
	"strings"

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
func (h *server) bearer(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		authorization := c.Request().Header.Values(echo.HeaderAuthorization)
		if len(authorization) > 1 {
			p := kindInvalidRequest.problemf("Send one Authorization header; this request has %d.", len(authorization))
			p.wwwAuthenticate = `Bearer realm="wxtoken", error="invalid_request", error_description="more than one Authorization header"`
			return p
		}
		raw, given := bearerToken(c.Request().Header.Get(echo.HeaderAuthorization))
		if !given {
			p := kindUnauthorized.problem("Send the access token from /v1/login as Authorization: Bearer <token>.")
			p.wwwAuthenticate = `Bearer realm="wxtoken"`
			return p
		}
		if raw == "" {
			return invalidToken(token.ErrInvalid)
		}
		sess, err := h.cfg.Tokens.Verify(c.Request().Context(), raw)
		if err != nil {
			h.cfg.Logger.InfoContext(c.Request().Context(), "token refused", "reason", reasonOf(err))
			return invalidToken(err)
		}
		// A token for an app no longer served here is refused on every
		// route, even with a good signature: its app was taken away.
		app, ok := h.cfg.Apps.Lookup(sess.AppID)
		if !ok {
			h.cfg.Logger.InfoContext(c.Request().Context(), "token refused", "reason", "audience is not an app served here")
			return invalidToken(token.ErrInvalid)
		}
		c.Set(sessionKey, sess)
		c.Set(appKey, app)
		return next(c)
	}
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
		ch := raw[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' ||
			strings.IndexByte("-._~+/=", ch) >= 0) {
			return "", true
		}
	}
	return raw, true
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
