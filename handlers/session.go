package handlers

import (
	"github.com/labstack/echo/v4"

	"github.com/wxtoken/wxtoken/token"
)

// sessionReset asks WeChat for a new session_key for the token's user and
// answers a new token carrying it, for the same openid and app: the
// stateless answer to a leaked session_key, or to data the mini program
// encrypted with a key newer than the token's. The old key stops working at
// WeChat at once; the old token itself simply runs out.
//
// The new token carries the old one's auth_time, the time of the user's
// wx.login(), and no reset is made once that is more than
// token.MaxLifetime ago, so a stolen token cannot be renewed forever. The
// check comes before WeChat is asked: a key WeChat replaced for a token that
// then cannot be issued would be lost. The refusal is a 403 problem, not a
// 401 invalid_token: the token stays valid for the other routes until it
// expires, and a client told it is invalid would discard it.
func (h *server) sessionReset(c echo.Context) error {
	s := sessionOf(c)
	if h.cfg.Now().Sub(s.AuthTime) > token.MaxLifetime {
		return loginTooOld()
	}
	app := credentials(c)
	ctx, cancel := h.work(c)
	defer cancel()
	sk, err := h.cfg.WeChat.ResetSessionKey(ctx, app, s.OpenID, s.SessionKey)
	if err != nil {
		return err
	}
	return h.answerToken(ctx, c, token.Identity{
		AppID: s.AppID, OpenID: s.OpenID, UnionID: s.UnionID, SessionKey: sk,
		RiskRank: s.RiskRank, TTL: h.cfg.Apps.Policy(s.AppID).TokenTTL, AuthTime: s.AuthTime,
	})
}

// loginTooOld is the answer to a reset more than token.MaxLifetime after
// the user's login.
func loginTooOld() *Problem {
	return kindLoginTooOld.problemf("The user logged in (wx.login()) more than %v ago, the longest a session can be "+
		"renewed for. Call wx.login() and POST /v1/login again.", token.MaxLifetime)
}
