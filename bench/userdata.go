package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/wechat"
)

// profile is what wx.getUserInfo gives a mini program: rawData (signed
// with the session_key) and the same fields plus ids and a watermark in
// encryptedData, about the size of WeChat's published 620-byte example.
type profile struct {
	NickName  string `json:"nickName"`
	Gender    int    `json:"gender"`
	Language  string `json:"language"`
	City      string `json:"city"`
	Province  string `json:"province"`
	Country   string `json:"country"`
	AvatarURL string `json:"avatarUrl"`
}

// decrypted is the plaintext of encryptedData: the profile, the user's
// ids, and the watermark naming the app it was made for.
type decrypted struct {
	OpenID string `json:"openId"`
	profile
	UnionID   string    `json:"unionId,omitempty"`
	Watermark watermark `json:"watermark"`
}

type watermark struct {
	Timestamp int64  `json:"timestamp"`
	AppID     string `json:"appid"`
}

// userDataBodies makes a user's request bodies for /v1/decrypt
// ({encryptedData, iv}) and /v1/userinfo (rawData, signature and the
// encrypted data), encrypted for its session_key the way WeChat does.
func userDataBodies(appID string, u benchUser) (decrypt, userinfo []byte, err error) {
	p := profile{NickName: "Band", Gender: 1, Language: "zh_CN", City: "Guangzhou", Province: "Guangdong", Country: "CN",
		AvatarURL: "http://wx.qlogo.cn/mmopen/vi_32/aSKcBBPpibyKNicHNTMM0qJVh8Kjgiak2AHWr8MHM4WgMEm7GFhsf8OYrySdbvAMvTsw3mo8ibKicsnfN5pRjl1p8HQ/0"}
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, nil, err
	}
	plain, err := json.Marshal(decrypted{OpenID: u.OpenID, profile: p,
		Watermark: watermark{Timestamp: time.Now().Unix(), AppID: appID}})
	if err != nil {
		return nil, nil, err
	}
	sk := secret.String(u.SessionKey)
	enc, iv, err := wechat.EncryptUserData(sk, plain)
	if err != nil {
		return nil, nil, err
	}
	decrypt, err = json.Marshal(map[string]string{"encryptedData": enc, "iv": iv})
	if err != nil {
		return nil, nil, err
	}
	userinfo, err = json.Marshal(map[string]string{"rawData": string(raw), "signature": wechat.SignRawData(sk, string(raw)),
		"encryptedData": enc, "iv": iv})
	return decrypt, userinfo, err
}

// newSessionKey is a random session_key as WeChat makes them: base64 of 16 bytes.
func newSessionKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}
