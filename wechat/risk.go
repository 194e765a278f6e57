package wechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
)

// OpRiskRank names getuserriskrank in errors.
const OpRiskRank = "getuserriskrank"

// Risk ranks WeChat answers: 0 is the lowest risk, MaxRiskRank the highest.
const MaxRiskRank = 4

// riskSceneLogin is getuserriskrank's scene for registration and login.
const riskSceneLogin = 0

// UserRiskRank asks WeChat how risky the user logging in is (scene 0,
// registration and login), from 0 (lowest) to MaxRiskRank. clientIP is the
// user's address as the service sees it.
func (c *Client) UserRiskRank(ctx context.Context, app Credentials, openid, clientIP string) (int, error) {
	body, err := json.Marshal(map[string]any{
		"appid": app.AppID, "openid": openid, "scene": riskSceneLogin, "client_ip": clientIP,
	})
	if err != nil {
		return 0, fmt.Errorf("wechat: %s: %w", OpRiskRank, err)
	}
	var ans struct {
		RiskRank *int `json:"risk_rank"`
		errAnswer
	}
	err = c.withAccessToken(ctx, app, func(tok string) error {
		ans.RiskRank = nil
		return c.call(ctx, app.AppID, OpRiskRank, http.MethodPost, "/wxa/getuserriskrank",
			url.Values{"access_token": {tok}}, body, &ans, newRedactor(tok))
	})
	if err != nil {
		return 0, err
	}
	if ans.RiskRank == nil || *ans.RiskRank < 0 || *ans.RiskRank > MaxRiskRank {
		return 0, &UpstreamError{Op: OpRiskRank, Kind: BadAnswer, Err: errors.New("answer lacks a risk_rank from 0 to 4")}
	}
	return *ans.RiskRank, nil
}
