package wechat

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/wxtoken/wxtoken/secret"
)

// OpResetSessionKey names resetusersessionkey in errors.
const OpResetSessionKey = "resetusersessionkey"

// ErrStaleSessionKey is ResetSessionKey's answer when sessionKey is no
// longer the user's current one (WeChat's 87009): only a fresh wx.login()
// can give a usable key then.
var ErrStaleSessionKey = errors.New("wechat: the session_key is no longer the user's current one")

// ResetSessionKey asks WeChat to replace the user's session_key and answers
// the new one. The request is signed with the current key, as checksession
// is, so only a holder of that key can reset it; the old key stops working
// at WeChat at once.
func (c *Client) ResetSessionKey(ctx context.Context, app Credentials, openid string, sessionKey secret.String) (secret.String, error) {
	sig := sessionSignature(sessionKey)
	var ans struct {
		OpenID     string        `json:"openid"`
		SessionKey secret.String `json:"session_key"`
		errAnswer
	}
	err := c.withAccessToken(ctx, app, func(tok string) error {
		ans.OpenID, ans.SessionKey = "", ""
		return c.call(ctx, app.AppID, OpResetSessionKey, http.MethodGet, "/wxa/resetusersessionkey", url.Values{
			"access_token": {tok}, "signature": {sig}, "openid": {openid}, "sig_method": {"hmac_sha256"},
		}, nil, &ans, newRedactor(tok, sig))
	})
	var ae *APIError
	if errors.As(err, &ae) && ae.Code == CodeInvalidSignature {
		return "", ErrStaleSessionKey
	}
	if err != nil {
		return "", err
	}
	if !ValidSessionKey(ans.SessionKey) {
		return "", &UpstreamError{Op: OpResetSessionKey, Kind: BadAnswer, Err: errors.New("session_key is not base64 of 16 bytes")}
	}
	if ans.OpenID != "" && ans.OpenID != openid {
		return "", &UpstreamError{Op: OpResetSessionKey, Kind: BadAnswer, Err: errors.New("answer is for another openid")}
	}
	return ans.SessionKey, nil
}
