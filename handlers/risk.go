package handlers

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/wxtoken/wxtoken/wechat"
)

// AppPolicy is what one app asks of its logins beyond the credentials.
type AppPolicy struct {
	// TokenTTL is its tokens' lifetime; 0 means the service's.
	TokenTTL time.Duration
	// Risk says whether and how WeChat's risk rank is asked at login.
	Risk RiskCheck
}

// RiskMode is what a login does with WeChat's risk rank.
type RiskMode int

const (
	// RiskOff never asks.
	RiskOff RiskMode = iota
	// RiskFlag asks and puts the rank in the risk_rank claim; a failing
	// risk API never blocks the login (the claim is left out).
	RiskFlag
	// RiskRefuse asks and refuses logins ranked RefuseAt or higher; a
	// failing risk API refuses the login (fails closed).
	RiskRefuse
)

// RiskCheck is an app's risk_check setting: off, flag or refuse:N.
type RiskCheck struct {
	Mode     RiskMode
	RefuseAt int
}

// ParseRiskCheck reads "off", "flag" or "refuse:N" with N from 1 to 4
// ("" is off). refuse:0 would refuse everyone, so it is an error.
func ParseRiskCheck(s string) (RiskCheck, error) {
	switch s {
	case "", "off":
		return RiskCheck{}, nil
	case "flag":
		return RiskCheck{Mode: RiskFlag}, nil
	}
	if n, ok := strings.CutPrefix(s, "refuse:"); ok {
		if v, err := strconv.Atoi(n); err == nil && v >= 1 && v <= wechat.MaxRiskRank {
			return RiskCheck{Mode: RiskRefuse, RefuseAt: v}, nil
		}
	}
	return RiskCheck{}, fmt.Errorf("%q is not off, flag or refuse:N with N from 1 to %d", s, wechat.MaxRiskRank)
}

// String is the setting as written.
func (r RiskCheck) String() string {
	switch r.Mode {
	case RiskFlag:
		return "flag"
	case RiskRefuse:
		return "refuse:" + strconv.Itoa(r.RefuseAt)
	default:
		return "off"
	}
}

// riskCheck runs the app's risk policy on a login that WeChat accepted. It
// answers the rank to put in the token (nil: no claim) or the problem that
// refuses the login.
func (h *server) riskCheck(ctx context.Context, c echo.Context, app wechat.Credentials, policy RiskCheck, openid string) (*int, error) {
	if policy.Mode == RiskOff {
		return nil, nil
	}
	rank, err := h.cfg.WeChat.UserRiskRank(ctx, app, openid, c.RealIP())
	if err != nil {
		h.cfg.Logger.WarnContext(ctx, "risk check failed", "appid", app.AppID,
			"mode", policy.String(), "err", err.Error())
		if policy.Mode == RiskFlag {
			return nil, nil
		}
		return nil, kindUnavailable.problem("The login risk check could not be made, and this app refuses logins without it. Retry shortly.").
			withRetryAfter(time.Second)
	}
	if policy.Mode == RiskRefuse && rank >= policy.RefuseAt {
		h.cfg.Logger.InfoContext(ctx, "login refused for risk", "appid", app.AppID, "risk_rank", rank)
		return nil, kindRiskRefused.problem("This login was refused: WeChat rates the user's risk too high for this app.")
	}
	return &rank, nil
}
