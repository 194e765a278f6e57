package handlers

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/wxtoken/wxtoken/token"
	"github.com/wxtoken/wxtoken/wechat"
)

// ProblemTypePrefix starts every problem "type". The types are stable: clients
// branch on them, so a type once published never changes meaning.
const ProblemTypePrefix = "urn:wxtoken:problem:"

// Problem is an RFC 9457 problem details answer. Handlers return it (or any
// error; see problemFor) and the one error handler renders it.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	// Errcode is WeChat's errcode when the problem came from WeChat, so
	// integrators can look it up in WeChat's docs.
	Errcode *int `json:"errcode,omitempty"`

	retryAfter      time.Duration
	wwwAuthenticate string
}

// Error makes a Problem an error that handlers can return.
func (p *Problem) Error() string { return p.Title + ": " + p.Detail }

// kind is one problem type: its slug, status and title never change.
type kind struct {
	slug   string
	status int
	title  string
}

// The catalogue of problem types. README and openapi.yaml list the same set;
// a test checks they agree.
var (
	kindInvalidRequest   = kind{"invalid-request", http.StatusBadRequest, "Invalid request"}
	kindUnsupportedMedia = kind{"unsupported-media-type", http.StatusUnsupportedMediaType, "Unsupported media type"}
	kindTooLarge         = kind{"request-too-large", http.StatusRequestEntityTooLarge, "Request body too large"}
	kindNotFound         = kind{"not-found", http.StatusNotFound, "Not found"}
	kindMethod           = kind{"method-not-allowed", http.StatusMethodNotAllowed, "Method not allowed"}
	kindUnknownApp       = kind{"unknown-app", http.StatusBadRequest, "Unknown appid"}
	kindInvalidCode      = kind{"invalid-code", http.StatusBadRequest, "Invalid code"}
	kindLoginBlocked     = kind{"login-blocked", http.StatusForbidden, "Login blocked by WeChat"}
	kindRiskRefused      = kind{"risk-refused", http.StatusForbidden, "Login refused for risk"}
	kindStaleSession     = kind{"stale-session", http.StatusConflict, "Session key replaced"}
	kindLoginTooOld      = kind{"login-too-old", http.StatusForbidden, "Login too old to renew"}
	kindRateLimited      = kind{"rate-limited", http.StatusTooManyRequests, "Too many requests"}
	kindUpstreamLimited  = kind{"wechat-rate-limited", http.StatusTooManyRequests, "WeChat rate limit"}
	kindUpstreamBusy     = kind{"wechat-busy", http.StatusServiceUnavailable, "WeChat is busy"}
	kindUpstreamBad      = kind{"wechat-error", http.StatusBadGateway, "WeChat answered with an error"}
	kindUpstreamTimeout  = kind{"wechat-timeout", http.StatusGatewayTimeout, "WeChat did not answer in time"}
	kindUnavailable      = kind{"unavailable", http.StatusServiceUnavailable, "Service temporarily unavailable"}
	kindUnauthorized     = kind{"unauthorized", http.StatusUnauthorized, "Authentication required"}
	kindInvalidToken     = kind{"invalid-token", http.StatusUnauthorized, "Invalid access token"}
	kindInvalidUserData  = kind{"invalid-user-data", http.StatusBadRequest, "Malformed user data"}
	kindDecryptFailed    = kind{"decryption-failed", http.StatusBadRequest, "User data could not be decrypted"}
	kindBadSignature     = kind{"invalid-signature", http.StatusBadRequest, "Signature mismatch"}
	kindInternal         = kind{"internal", http.StatusInternalServerError, "Internal error"}
)

// Kinds lists every problem type the service can answer, for docs and tests.
func Kinds() map[string]int {
	m := map[string]int{}
	for _, k := range []kind{kindInvalidRequest, kindUnsupportedMedia, kindTooLarge, kindNotFound, kindMethod,
		kindUnknownApp, kindInvalidCode, kindLoginBlocked, kindRateLimited, kindUpstreamLimited, kindUpstreamBusy,
		kindUpstreamBad, kindUpstreamTimeout, kindUnavailable, kindUnauthorized, kindInvalidToken,
		kindInvalidUserData, kindDecryptFailed, kindBadSignature, kindInternal, kindRiskRefused, kindStaleSession,
		kindLoginTooOld} {
		m[ProblemTypePrefix+k.slug] = k.status
	}
	return m
}

func (k kind) problem(detail string) *Problem {
	return &Problem{Type: ProblemTypePrefix + k.slug, Title: k.title, Status: k.status, Detail: detail}
}

func (k kind) problemf(format string, args ...any) *Problem {
	return k.problem(fmt.Sprintf(format, args...))
}

func (p *Problem) withRetryAfter(d time.Duration) *Problem {
	p.retryAfter = d
	return p
}

func (p *Problem) withErrcode(code int) *Problem {
	p.Errcode = &code
	return p
}

// detailDecrypt is the one answer for every key-dependent decryption failure:
// the same bytes whatever went wrong, so it reveals nothing about padding.
const detailDecrypt = "The data did not decrypt to this app's user data with the token's session_key. " +
	"Usual causes: the mini program called wx.login() again after this token was issued (the session_key changed: " +
	"call wx.login() and /v1/login again, or ask POST /v1/session/check), or encryptedData and iv come from different calls."

// problemFor maps any error a handler returns to the problem to answer. It is
// the only place that decides what a caller learns about a failure.
func problemFor(err error) (*Problem, bool) {
	var p *Problem
	if errors.As(err, &p) {
		return p, true
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		switch he.Code {
		case http.StatusNotFound:
			return kindNotFound.problem("No such route."), true
		case http.StatusMethodNotAllowed:
			return kindMethod.problem("This route does not accept that method."), true
		case http.StatusRequestEntityTooLarge:
			return kindTooLarge.problemf("Request bodies are limited to %d bytes.", bodyLimit), true
		case http.StatusUnsupportedMediaType:
			return kindUnsupportedMedia.problem("Send JSON with Content-Type: application/json."), true
		case http.StatusUnauthorized, http.StatusBadRequest:
			return kindInvalidRequest.problem("The request could not be understood."), true
		}
		return nil, false
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return kindTooLarge.problemf("Request bodies are limited to %d bytes.", bodyLimit), true
	}
	if errors.Is(err, token.ErrInvalid) {
		return invalidToken(err), true
	}
	var ie *wechat.InputError
	if errors.As(err, &ie) {
		return kindInvalidUserData.problemf("%s: %s", ie.Field, ie.Reason), true
	}
	if errors.Is(err, wechat.ErrStaleSessionKey) {
		return kindStaleSession.problem("The token's session_key is no longer the user's current one at WeChat " +
			"(the mini program called wx.login() again, or the key was reset). Call wx.login() and POST /v1/login again."), true
	}
	if errors.Is(err, token.ErrLoginTooOld) {
		return loginTooOld(), true
	}
	if errors.Is(err, wechat.ErrDecrypt) {
		return kindDecryptFailed.problem(detailDecrypt), true
	}
	var ae *wechat.APIError
	if errors.As(err, &ae) {
		return apiProblem(ae), true
	}
	var ue *wechat.UpstreamError
	if errors.As(err, &ue) {
		return upstreamProblem(ue), true
	}
	return nil, false
}

func invalidToken(err error) *Problem {
	p := kindInvalidToken.problem("The access token is invalid. Log in again with wx.login() and POST /v1/login.")
	desc := "invalid token"
	if errors.Is(err, token.ErrExpired) {
		p.Detail = "The access token has expired. Log in again with wx.login() and POST /v1/login."
		desc = "token expired"
	}
	p.wwwAuthenticate = `Bearer realm="wxtoken", error="invalid_token", error_description="` + desc + `"`
	return p
}

// apiProblem maps WeChat's errcodes (see shared/docs/wechat-api.md) to what
// our caller should see; the errcode is named so integrators can look it up.
func apiProblem(e *wechat.APIError) *Problem {
	var p *Problem
	switch e.Code {
	case wechat.CodeInvalidCode:
		p = kindInvalidCode.problemf("WeChat rejected the code (errcode 40029: invalid code): it is wrong, expired (a code lives about 5 minutes) or belongs to another appid.")
		if e.Op == wechat.OpPhoneNumber {
			p.Detail = "WeChat rejected the phone code (errcode 40029: invalid code). Send the code from the getPhoneNumber button's event (e.detail.code), not a wx.login() code; each phone code is single-use and lives 5 minutes."
		}
	case wechat.CodeCodeUsed:
		p = kindInvalidCode.problem("WeChat rejected the code (errcode 40163: code already used). Each wx.login() code is single-use: call wx.login() again.")
	case wechat.CodeHighRisk:
		p = kindLoginBlocked.problem("WeChat refused this user's login (errcode 40226: high-risk user).")
	case wechat.CodeRateLimited:
		p = kindUpstreamLimited.problem("WeChat's rate limit was reached (errcode 45011). Retry later.").withRetryAfter(60 * time.Second)
	case wechat.CodeBusy:
		p = kindUpstreamBusy.problem("WeChat is busy (errcode -1). Retry shortly.").withRetryAfter(time.Second)
	case wechat.CodeInvalidAppID, wechat.CodeInvalidAppSecret:
		p = kindUpstreamBad.problemf("WeChat refused the service's app credentials (errcode %d). This is a configuration fault on the server, not the caller's.", e.Code)
	default:
		p = kindUpstreamBad.problemf("WeChat answered errcode %d.", e.Code)
	}
	return p.withErrcode(e.Code)
}

func upstreamProblem(e *wechat.UpstreamError) *Problem {
	switch e.Kind {
	case wechat.Timeout:
		return kindUpstreamTimeout.problem("WeChat did not answer in time. Retry shortly.").withRetryAfter(time.Second)
	case wechat.CircuitOpen:
		return kindUnavailable.problem("WeChat is failing; requests are refused for a moment to let it recover.").withRetryAfter(retryAfterOr(e.RetryAfter, time.Second))
	case wechat.Overloaded:
		return kindUnavailable.problem("Too many calls to WeChat are in flight. Retry shortly.").withRetryAfter(retryAfterOr(e.RetryAfter, time.Second))
	case wechat.BadStatus:
		return kindUpstreamBad.problemf("WeChat answered HTTP %d. Retry shortly.", e.Status).withRetryAfter(time.Second)
	case wechat.BadAnswer:
		return kindUpstreamBad.problem("WeChat's answer could not be understood. Retry shortly.").withRetryAfter(time.Second)
	default:
		return kindUpstreamBad.problem("WeChat could not be reached. Retry shortly.").withRetryAfter(time.Second)
	}
}

func retryAfterOr(d, fallback time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return fallback
}

// errorHandler is echo's HTTPErrorHandler: every error, ours or echo's, leaves
// as problem+json. Unknown errors become a bare 500 and are logged, never shown.
func errorHandler(logger *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		p, known := problemFor(err)
		if !known {
			logger.ErrorContext(c.Request().Context(), "unhandled error", "route", c.Path(), "err", err.Error())
			p = kindInternal.problem("The server failed to handle the request.")
		}
		writeProblem(c, p)
	}
}

func writeProblem(c echo.Context, p *Problem) {
	h := c.Response().Header()
	if p.retryAfter > 0 {
		secs := int((p.retryAfter + time.Second - 1) / time.Second)
		h.Set("Retry-After", strconv.Itoa(secs))
	}
	if p.wwwAuthenticate != "" {
		h.Set("WWW-Authenticate", p.wwwAuthenticate)
	}
	h.Set("Cache-Control", "no-store")
	h.Set(echo.HeaderContentType, "application/problem+json")
	c.Response().WriteHeader(p.Status)
	if c.Request().Method == http.MethodHead {
		return
	}
	_ = jsonEncode(c.Response(), p)
}
