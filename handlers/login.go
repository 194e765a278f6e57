package handlers

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/wxtoken/wxtoken/token"
)

type loginRequest struct {
	Code  string `json:"code" validate:"required,max=256,printascii"`
	AppID string `json:"appid" validate:"max=64"`
}

type loginResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	OpenID      string `json:"openid"`
	UnionID     string `json:"unionid,omitempty"`
	RiskRank    *int   `json:"risk_rank,omitempty"`
}

// login exchanges a wx.login() code for a token. The code is sent to WeChat
// exactly once: it is single-use, so a retry could only fail with 40163.
func (h *server) login(c echo.Context) error {
	var req loginRequest
	if err := h.bind.bind(c, &req); err != nil {
		return err
	}
	appID := req.AppID
	if appID == "" {
		appID = h.cfg.Apps.Default()
		if appID == "" {
			return kindInvalidRequest.problem(`Field "appid" is required: this service serves several mini programs, so a login must name its app.`)
		}
	}
	app, ok := h.cfg.Apps.Lookup(appID)
	if !ok {
		return kindUnknownApp.problem("This service does not serve that appid.")
	}
	policy := h.cfg.Apps.Policy(app.AppID)
	ctx, cancel := h.work(c)
	defer cancel()
	sess, err := h.cfg.WeChat.Code2Session(ctx, app, req.Code)
	if err != nil {
		return err
	}
	rank, err := h.riskCheck(ctx, c, app, policy.Risk, sess.OpenID)
	if err != nil {
		return err
	}
	return h.answerToken(ctx, c, token.Identity{
		AppID: app.AppID, OpenID: sess.OpenID, UnionID: sess.UnionID, SessionKey: sess.SessionKey,
		RiskRank: rank, TTL: policy.TokenTTL,
	})
}

// answerToken issues a token for id and answers it, never to be cached: the
// answer of /v1/login and of /v1/session/reset.
func (h *server) answerToken(ctx context.Context, c echo.Context, id token.Identity) error {
	issued, err := h.cfg.Tokens.Issue(ctx, id)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, loginResponse{
		AccessToken: issued.Token,
		TokenType:   "Bearer",
		ExpiresIn:   int64(issued.ExpiresIn.Seconds()),
		OpenID:      id.OpenID,
		UnionID:     id.UnionID,
		RiskRank:    id.RiskRank,
	})
}

// jwks publishes the verification keys with an ETag and a bounded max-age,
// so downstream caches stay fresh well within the key pre-publication time.
func (h *server) jwks(c echo.Context) error {
	body, etag := h.cfg.JWKS()
	hdr := c.Response().Header()
	hdr.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(h.cfg.JWKSMaxAge.Seconds())))
	hdr.Set("ETag", etag)
	if etagMatches(c.Request().Header.Get("If-None-Match"), etag) {
		return c.NoContent(http.StatusNotModified)
	}
	return c.Blob(http.StatusOK, "application/jwk-set+json", body)
}

// etagMatches implements If-None-Match's weak comparison (RFC 9110 13.1.2).
func etagMatches(header, etag string) bool {
	if header == "" || etag == "" {
		return false
	}
	want := strings.TrimPrefix(etag, "W/")
	for _, candidate := range strings.Split(header, ",") {
		candidate = strings.TrimSpace(candidate)
		if candidate == "*" || strings.TrimPrefix(candidate, "W/") == want {
			return true
		}
	}
	return false
}
