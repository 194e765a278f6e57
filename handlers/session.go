package handlers

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/wxtoken/wxtoken/token"
)

// sessionReset asks WeChat for a new session_key for the token's user and
// answers a new token carrying it, for the same openid and app: the
// stateless answer to a leaked session_key, or to data the mini program
// encrypted with a key newer than the token's. The old key stops working at
// WeChat at once; the old token itself simply runs out.
func (h *server) sessionReset(c echo.Context) error {
	s := sessionOf(c)
	app := credentials(c)
	ctx, cancel := h.work(c)
	defer cancel()
	sk, err := h.cfg.WeChat.ResetSessionKey(ctx, app, s.OpenID, s.SessionKey)
	if err != nil {
		return err
	}
	issued, err := h.cfg.Tokens.Issue(ctx, token.Identity{
		AppID: s.AppID, OpenID: s.OpenID, UnionID: s.UnionID, SessionKey: sk,
		RiskRank: s.RiskRank, TTL: h.cfg.Apps.Policy(s.AppID).TokenTTL,
	})
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, loginResponse{
		AccessToken: issued.Token,
		TokenType:   "Bearer",
		ExpiresIn:   int64(issued.ExpiresIn.Seconds()),
		OpenID:      s.OpenID,
		UnionID:     s.UnionID,
		RiskRank:    s.RiskRank,
	})
}
