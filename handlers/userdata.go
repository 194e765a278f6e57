package handlers

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/wxtoken/wxtoken/token"
	"github.com/wxtoken/wxtoken/wechat"
)

type decryptRequest struct {
	EncryptedData string `json:"encryptedData" validate:"required,max=49152"`
	IV            string `json:"iv" validate:"required,max=64"`
}

// decrypt opens user data WeChat encrypted for this session. Every
// key-dependent failure answers the same problem (no padding oracle).
func (h *server) decrypt(c echo.Context) error {
	var req decryptRequest
	if err := h.bind.bind(c, &req); err != nil {
		return err
	}
	s := sessionOf(c)
	data, err := wechat.DecryptUserData(s.SessionKey, ownerOf(s), req.EncryptedData, req.IV)
	if err != nil {
		return err
	}
	return answerJSONMembers(c, member{"data", data})
}

// member is one name and JSON value of an answer object.
type member struct {
	name  string
	value json.RawMessage
}

// answerJSONMembers answers 200 with the JSON object of members, whose
// values are JSON already checked (decrypted user data, rawData), marked
// no-store. Written by hand: encoding/json would compact every
// json.RawMessage, a second pass over each byte of the user data.
func answerJSONMembers(c echo.Context, members ...member) error {
	size := 3
	for _, m := range members {
		size += len(m.name) + len(m.value) + 4
	}
	buf := make([]byte, 0, size)
	buf = append(buf, '{')
	for i, m := range members {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, '"')
		buf = append(buf, m.name...)
		buf = append(buf, '"', ':')
		buf = append(buf, m.value...)
	}
	buf = append(buf, '}', '\n')
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, buf)
}

// ownerOf is whom user data opened for session s must belong to: the
// token's app, openid and unionid (see wechat.DecryptUserData).
func ownerOf(s *token.Session) wechat.Owner {
	return wechat.Owner{AppID: s.AppID, OpenID: s.OpenID, UnionID: s.UnionID}
}

type userinfoRequest struct {
	RawData       string `json:"rawData" validate:"required,max=16384"`
	Signature     string `json:"signature" validate:"required,max=64"`
	EncryptedData string `json:"encryptedData" validate:"required_with=IV,max=49152"`
	IV            string `json:"iv" validate:"required_with=EncryptedData,max=64"`
}

// userinfo checks that rawData really came from WeChat for this session
// (signature = sha1(rawData + session_key)) and answers the profile, plus the
// decrypted data (with openId and unionId) when it is given.
func (h *server) userinfo(c echo.Context) error {
	var req userinfoRequest
	if err := h.bind.bind(c, &req); err != nil {
		return err
	}
	s := sessionOf(c)
	if !wechat.VerifyRawData(s.SessionKey, req.RawData, req.Signature) {
		return kindBadSignature.problem("signature is not sha1(rawData + session_key) for this session. " +
			"Send rawData exactly as the mini program received it; if the mini program called wx.login() again, log in again.")
	}
	raw := []byte(req.RawData)
	if !json.Valid(raw) || !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
		return kindInvalidRequest.problem("rawData is not a JSON object.")
	}
	if req.EncryptedData == "" {
		return answerJSONMembers(c, member{"profile", raw})
	}
	data, err := wechat.DecryptUserData(s.SessionKey, ownerOf(s), req.EncryptedData, req.IV)
	if err != nil {
		return err
	}
	return answerJSONMembers(c, member{"profile", raw}, member{"data", data})
}

type phoneRequest struct {
	Code string `json:"code" validate:"required,max=256,printascii"`
}

type phoneResponse struct {
	PhoneNumber     string `json:"phoneNumber"`
	PurePhoneNumber string `json:"purePhoneNumber"`
	CountryCode     string `json:"countryCode"`
}

// phoneNumber redeems a getPhoneNumber button code for this user's number.
// The token's openid goes along so WeChat refuses a code taken from another user.
func (h *server) phoneNumber(c echo.Context) error {
	var req phoneRequest
	if err := h.bind.bind(c, &req); err != nil {
		return err
	}
	s := sessionOf(c)
	ctx, cancel := h.work(c)
	defer cancel()
	info, err := h.cfg.WeChat.PhoneNumber(ctx, credentials(c), req.Code, s.OpenID)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare([]byte(info.Watermark.AppID), []byte(s.AppID)) != 1 {
		return kindInvalidCode.problem("WeChat's answer for this phone code carries another app's watermark.")
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, phoneResponse{
		PhoneNumber: info.PhoneNumber, PurePhoneNumber: info.PurePhoneNumber, CountryCode: info.CountryCode,
	})
}

type sessionCheckResponse struct {
	Valid bool `json:"valid"`
}

// sessionCheck asks WeChat whether the token's session_key is still the
// user's current one. false means: call wx.login() and log in again.
func (h *server) sessionCheck(c echo.Context) error {
	s := sessionOf(c)
	ctx, cancel := h.work(c)
	defer cancel()
	valid, err := h.cfg.WeChat.CheckSession(ctx, credentials(c), s.OpenID, s.SessionKey)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, sessionCheckResponse{Valid: valid})
}

type devEncryptResponse struct {
	EncryptedData string `json:"encryptedData"`
	IV            string `json:"iv"`
	RawData       string `json:"rawData"`
	Signature     string `json:"signature"`
}

// devEncrypt (dev mode only) answers what wx.getUserInfo would give the mini
// program for this JSON object and session: encryptedData and iv (the object
// with the user's openId first, their unionId and a watermark, as WeChat
// writes user info) for /v1/decrypt, and rawData with its signature for
// /v1/userinfo, so both can be tried with curl.
func (h *server) devEncrypt(c echo.Context) error {
	var obj map[string]any
	if err := h.bind.bind(c, &obj); err != nil {
		return err
	}
	if obj == nil {
		return kindInvalidRequest.problem("The body must be a JSON object.")
	}
	s := sessionOf(c)
	for _, k := range []string{"openId", "unionId", "watermark"} {
		delete(obj, k)
	}
	rawData, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	plain, err := devUserInfo(s, rawData, h.cfg.Now().Unix())
	if err != nil {
		return err
	}
	enc, iv, err := wechat.EncryptUserData(s.SessionKey, plain)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, devEncryptResponse{
		EncryptedData: enc, IV: iv, RawData: string(rawData), Signature: wechat.SignRawData(s.SessionKey, string(rawData)),
	})
}

// devUserInfo writes user info the way WeChat does: openId first (the
// decrypt routes check block 1 against it), then the profile fields, the
// unionId when the user has one, and the watermark.
func devUserInfo(s *token.Session, profile []byte, now int64) ([]byte, error) {
	head := map[string]string{"openId": s.OpenID}
	tail := map[string]any{"watermark": map[string]any{"appid": s.AppID, "timestamp": now}}
	if s.UnionID != "" {
		tail["unionId"] = s.UnionID
	}
	openID, err := json.Marshal(head)
	if err != nil {
		return nil, err
	}
	rest, err := json.Marshal(tail)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Write(openID[:len(openID)-1])
	if inner := bytes.TrimSuffix(bytes.TrimPrefix(profile, []byte("{")), []byte("}")); len(inner) > 0 {
		b.WriteByte(',')
		b.Write(inner)
	}
	b.WriteByte(',')
	b.Write(rest[1:])
	return b.Bytes(), nil
}
