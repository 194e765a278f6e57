package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/internal/wxtest"
	"github.com/wxtoken/wxtoken/keys"
	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/token"
	"github.com/wxtoken/wxtoken/wechat"
)

func TestWeChatVectorsThroughHTTP(t *testing.T) {
	f := newFixture(t, wxtest.VectorAppID)
	s := startServer(t, f.env)

	f.emu.PresetLogin("vector-decrypt", wxtest.VectorOpenID, wxtest.VectorUnionID, wxtest.VectorSessionKey)
	tok, _ := login(t, s.URL, "vector-decrypt")
	c := postJSON(t, s.URL+"/v1/decrypt", tok, map[string]string{"encryptedData": wxtest.VectorEncryptedData, "iv": wxtest.VectorIV})
	if c.Status != 200 {
		t.Fatalf("decrypt = %d %s", c.Status, c.Body)
	}
	data := c.json(t)["data"].(map[string]any)
	if data["nickName"] != "Band" || data["openId"] != wxtest.VectorOpenID || data["unionId"] != "ocMvos6NjeKLIBqg5Mr9QjxrP1FA" {
		t.Errorf("decrypted %v", data)
	}

	f.emu.PresetLogin("vector-sign", "oVectorSignUser000000000000", "", wxtest.VectorRawSessionKey)
	tok2, _ := login(t, s.URL, "vector-sign")
	c = postJSON(t, s.URL+"/v1/userinfo", tok2, map[string]string{"rawData": wxtest.VectorRawData, "signature": wxtest.VectorSignature})
	if c.Status != 200 {
		t.Fatalf("userinfo = %d %s", c.Status, c.Body)
	}
	if p := c.json(t)["profile"].(map[string]any); p["nickName"] != "Band" || p["city"] != "Guangzhou" {
		t.Errorf("profile %v", p)
	}
	// The same signature under another session's key is refused.
	c = postJSON(t, s.URL+"/v1/userinfo", tok, map[string]string{"rawData": wxtest.VectorRawData, "signature": wxtest.VectorSignature})
	assertProblem(t, c, 400, "invalid-signature")
	// Uppercase hex is the same signature.
	c = postJSON(t, s.URL+"/v1/userinfo", tok2, map[string]string{"rawData": wxtest.VectorRawData, "signature": strings.ToUpper(wxtest.VectorSignature)})
	if c.Status != 200 {
		t.Errorf("uppercase signature = %d", c.Status)
	}
	// With encryptedData the decrypted data comes along (openId, unionId).
	c = postJSON(t, s.URL+"/v1/userinfo", tok, map[string]string{"rawData": wxtest.VectorRawData,
		"signature": wxtest.Signature(wxtest.VectorRawData, wxtest.VectorSessionKey), "encryptedData": wxtest.VectorEncryptedData, "iv": wxtest.VectorIV})
	if c.Status != 200 {
		t.Fatalf("userinfo with data = %d %s", c.Status, c.Body)
	}
	if d := c.json(t)["data"].(map[string]any); d["unionId"] != "ocMvos6NjeKLIBqg5Mr9QjxrP1FA" {
		t.Errorf("data %v", d)
	}
}

// userInfo is user info as WeChat writes it for the user of a login
// answer: openId first, then fields, the unionId when the user has one,
// and the watermark.
func userInfo(answer map[string]any, fields string) []byte {
	s := `{"openId":"` + answer["openid"].(string) + `",` + fields
	if u, _ := answer["unionid"].(string); u != "" {
		s += `,"unionId":"` + u + `"`
	}
	return []byte(s + `,"watermark":{"appid":"` + testAppID + `","timestamp":1}}`)
}

// TestDecryptIsNoPaddingOracle: every key-dependent failure answers the
// same bytes, so a token holder cannot tell a padding error from any other.
func TestDecryptIsNoPaddingOracle(t *testing.T) {
	f := newFixture(t, testAppID)
	s := startServer(t, f.env)
	tok, answer := login(t, s.URL, "code-oracle")
	sk := secret.String(f.emu.CurrentSessionKey(testAppID, answer["openid"].(string)))
	other := secret.String("AAAAAAAAAAAAAAAAAAAAAA==")

	plain := userInfo(answer, `"a":1`)
	good, iv, err := wechat.EncryptUserData(sk, plain)
	if err != nil {
		t.Fatal(err)
	}
	ok := postJSON(t, s.URL+"/v1/decrypt", tok, map[string]string{"encryptedData": good, "iv": iv})
	if ok.Status != 200 {
		t.Fatalf("good data = %d %s", ok.Status, ok.Body)
	}
	notJSON, iv2, _ := wechat.EncryptUserData(sk, []byte(`this is not json at all`))
	otherApp, iv3, _ := wechat.EncryptUserData(sk, bytes.Replace(plain, []byte(testAppID), []byte("wxsomeoneelse0000"), 1))
	noMark, iv4, _ := wechat.EncryptUserData(sk, []byte(`{"nickName":"x"}`))
	wrongKey, iv5, _ := wechat.EncryptUserData(other, plain)
	share, iv6, _ := wechat.EncryptUserData(sk, []byte(`{"openGId":"tGOZ4d5Yerkj7xaK4SU9XMF9UwEM","watermark":{"appid":"`+testAppID+`","timestamp":1}}`))
	// The issue's attack: the iv rewrites block 1 to {"unionId":"evil…,
	// still JSON, watermark intact.
	ivb, _ := base64.StdEncoding.DecodeString(iv)
	for i, ch := range []byte(`{"unionId":"evil`) {
		ivb[i] ^= plain[i] ^ ch
	}
	evilIV := base64.StdEncoding.EncodeToString(ivb)
	raw, _ := base64.StdEncoding.DecodeString(good)
	raw[len(raw)-17] ^= 0x01 // flips the last plaintext byte: bad padding
	badPad := base64.StdEncoding.EncodeToString(raw)

	cases := map[string][2]string{
		"bad padding":        {badPad, iv},
		"not json":           {notJSON, iv2},
		"watermark of other": {otherApp, iv3},
		"no watermark":       {noMark, iv4},
		"wrong key":          {wrongKey, iv5},
		"iv of another call": {good, iv2},
		"iv rewrote block 1": {good, evilIV},
		"share info":         {share, iv6},
	}
	var first []byte
	for name, in := range cases {
		c := postJSON(t, s.URL+"/v1/decrypt", tok, map[string]string{"encryptedData": in[0], "iv": in[1]})
		assertProblem(t, c, 400, "decryption-failed")
		if first == nil {
			first = c.Body
		} else if !bytes.Equal(first, c.Body) {
			t.Errorf("%s answered differently:\n%s\n%s", name, first, c.Body)
		}
	}
	// /v1/userinfo opens the same data the same way.
	c := postJSON(t, s.URL+"/v1/userinfo", tok, map[string]string{"rawData": `{"nickName":"x"}`,
		"signature": wxtest.Signature(`{"nickName":"x"}`, sk.Reveal()), "encryptedData": good, "iv": evilIV})
	assertProblem(t, c, 400, "decryption-failed")
	if !bytes.Equal(first, c.Body) {
		t.Errorf("userinfo with block 1 rewritten answered differently:\n%s\n%s", first, c.Body)
	}
	if !strings.Contains(string(first), "/v1/session/check") || !strings.Contains(string(first), "wx.login()") {
		t.Errorf("the decrypt failure does not point integrators to the usual cause: %s", first)
	}
}

func TestDecryptNamesKeyIndependentMistakes(t *testing.T) {
	f := newFixture(t, testAppID)
	s := startServer(t, f.env)
	tok, _ := login(t, s.URL, "code-mistakes")
	spaced := strings.ReplaceAll(wxtest.VectorEncryptedData, "+", " ")
	urlenc := strings.ReplaceAll(wxtest.VectorEncryptedData, "+", "%2B")
	tests := []struct {
		name, data, iv, want string
	}{
		{"plus became space", spaced, wxtest.VectorIV, "space"},
		{"url-encoded", urlenc, wxtest.VectorIV, "URL"},
		{"iv length", wxtest.VectorEncryptedData, base64.StdEncoding.EncodeToString([]byte("short")), "16"},
		{"not block multiple", base64.StdEncoding.EncodeToString([]byte("0123456789")), wxtest.VectorIV, "16"},
		{"not base64", "!!!!", wxtest.VectorIV, "base64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := postJSON(t, s.URL+"/v1/decrypt", tok, map[string]string{"encryptedData": tc.data, "iv": tc.iv})
			p := assertProblem(t, c, 400, "invalid-user-data")
			if !strings.Contains(strings.ToLower(p["detail"].(string)), strings.ToLower(tc.want)) {
				t.Errorf("detail %q does not name %q", p["detail"], tc.want)
			}
		})
	}
	c := postJSON(t, s.URL+"/v1/decrypt", tok, map[string]string{"iv": wxtest.VectorIV})
	assertProblem(t, c, 400, "invalid-request")
}

func TestBearerRules(t *testing.T) {
	f := newFixture(t, testAppID)
	s := startServer(t, f.env)
	tok, _ := login(t, s.URL, "code-bearer")
	parts := strings.Split(tok, ".")
	sig := []byte(parts[2])
	sig[5] ^= 1
	tampered := parts[0] + "." + parts[1] + "." + string(sig)
	tests := []struct {
		name, header string
		status       int
		typ          string
		challenge    string
	}{
		{"no header", "", 401, "unauthorized", `Bearer realm="wxtoken"`},
		{"basic scheme", "Basic dXNlcjpwYXNz", 401, "unauthorized", `Bearer realm="wxtoken"`},
		{"empty bearer", "Bearer ", 401, "invalid-token", `error="invalid_token"`},
		{"junk token", "Bearer not-a-jwt", 401, "invalid-token", `error="invalid_token"`},
		{"bad characters", "Bearer a b c", 401, "invalid-token", `error="invalid_token"`},
		{"bad signature", "Bearer " + tampered, 401, "invalid-token", `error="invalid_token"`},
		{"good", "Bearer " + tok, 200, "", ""},
		{"lowercase scheme", "bearer " + tok, 200, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", s.URL+"/v1/session/check", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status == 401 {
				if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
					t.Errorf("content type %q", ct)
				}
				if got := resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, tc.challenge) {
					t.Errorf("WWW-Authenticate = %q, want %q", got, tc.challenge)
				}
				if tc.typ == "unauthorized" && strings.Contains(resp.Header.Get("WWW-Authenticate"), "error=") {
					t.Error("a request without a token must get a bare challenge")
				}
			}
		})
	}
}

func TestPhoneNumberAndSessionCheck(t *testing.T) {
	f := newFixture(t, testAppID)
	s := startServer(t, f.env)
	tok, answer := login(t, s.URL, "code-phone")
	openid := answer["openid"].(string)

	c := postJSON(t, s.URL+"/v1/phone-number", tok, map[string]string{"code": "phone-code-1"})
	if c.Status != 200 {
		t.Fatalf("phone = %d %s", c.Status, c.Body)
	}
	p := c.json(t)
	if p["countryCode"] != "86" || len(p["purePhoneNumber"].(string)) != 11 || p["phoneNumber"] == "" {
		t.Errorf("phone answer %v", p)
	}
	if _, ok := p["watermark"]; ok {
		t.Error("watermark leaked into the answer")
	}
	c = postJSON(t, s.URL+"/v1/phone-number", tok, map[string]string{"code": "err-40029"})
	prob := assertProblem(t, c, 400, "invalid-code")
	if !strings.Contains(prob["detail"].(string), "getPhoneNumber") {
		t.Errorf("40029 on phone does not explain the code mix-up: %v", prob["detail"])
	}

	c = postJSON(t, s.URL+"/v1/session/check", tok, nil)
	if c.Status != 200 || c.json(t)["valid"] != true {
		t.Fatalf("session check = %d %s", c.Status, c.Body)
	}
	// The same user logs in again: WeChat replaces the session_key, so the
	// first token's key is no longer current.
	f.emu.PresetLogin("code-phone-again", openid, "", "BBBBBBBBBBBBBBBBBBBBBB==")
	tok2, _ := login(t, s.URL, "code-phone-again")
	c = postJSON(t, s.URL+"/v1/session/check", tok, nil)
	if c.Status != 200 || c.json(t)["valid"] != false {
		t.Fatalf("old session check = %d %s", c.Status, c.Body)
	}
	c = postJSON(t, s.URL+"/v1/session/check", tok2, nil)
	if c.Status != 200 || c.json(t)["valid"] != true {
		t.Fatalf("new session check = %d %s", c.Status, c.Body)
	}
	// access_token expired at WeChat: refreshed once and the call retried.
	f.emu.ExpireAccessTokens()
	c = postJSON(t, s.URL+"/v1/session/check", tok2, nil)
	if c.Status != 200 || c.json(t)["valid"] != true {
		t.Fatalf("after access_token expiry = %d %s", c.Status, c.Body)
	}
	if n := f.emu.Calls("/cgi-bin/token"); n != 0 {
		t.Errorf("legacy /cgi-bin/token called %d times", n)
	}
}

// TestStatelessAcrossReplicas: a second server process that shares only the
// keys directory and issuer accepts and uses a token the first one issued,
// both ways.
func TestStatelessAcrossReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("starts OS processes")
	}
	t.Parallel()
	f := newFixture(t, testAppID)
	a := startProcess(t, f.env)
	b := startProcess(t, f.env)
	tok, answer := login(t, a.URL, "code-replica")
	sk := secret.String(f.emu.CurrentSessionKey(testAppID, answer["openid"].(string)))
	data, iv, err := wechat.EncryptUserData(sk, []byte(`{"stepInfoList":[],"watermark":{"appid":"`+testAppID+`","timestamp":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	c := postJSON(t, b.URL+"/v1/decrypt", tok, map[string]string{"encryptedData": data, "iv": iv})
	if c.Status != 200 {
		t.Fatalf("replica b decrypt = %d %s", c.Status, c.Body)
	}
	if c = postJSON(t, b.URL+"/v1/session/check", tok, nil); c.Status != 200 || c.json(t)["valid"] != true {
		t.Fatalf("replica b session check = %d %s", c.Status, c.Body)
	}
	tokB, _ := login(t, b.URL, "code-replica-b")
	if c = postJSON(t, a.URL+"/v1/session/check", tokB, nil); c.Status != 200 || c.json(t)["valid"] != true {
		t.Fatalf("replica a, token from b: session check = %d %s", c.Status, c.Body)
	}
}

// ringOf serves a directory's keys to a token service built in the test.
type ringOf struct{ ring *keys.Ring }

func (r ringOf) Current() *keys.Ring { return r.ring }

// TestLeewayIsConfigurable: a token issued by a replica whose clock runs
// 20 s ahead is accepted under the default 30 s leeway and refused with
// WXTOKEN_LEEWAY=0s.
func TestLeewayIsConfigurable(t *testing.T) {
	f := newFixture(t, testAppID)
	ring, err := keys.NewDir(f.keysDir, nil).Load(3 * time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ahead, err := token.New(token.Config{Issuer: "https://auth.example.test", TTL: time.Hour, Leeway: 30 * time.Second,
		Audiences: []string{testAppID}, Keys: ringOf{ring}, Now: func() time.Time { return time.Now().Add(20 * time.Second) }})
	if err != nil {
		t.Fatal(err)
	}
	_, answer := login(t, startServer(t, f.env).URL, "code-leeway") // a real user and session_key at the emulator
	openid := answer["openid"].(string)
	issued, err := ahead.Issue(context.Background(), token.Identity{AppID: testAppID, OpenID: openid,
		SessionKey: secret.String(f.emu.CurrentSessionKey(testAppID, openid))})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		leeway string
		status int
	}{
		{"", 200},   // default 30s
		{"0s", 401}, // iat 20 s in the future
		{"10s", 401},
		{"25s", 200},
	} {
		t.Run("leeway="+tc.leeway, func(t *testing.T) {
			e := f.env
			if tc.leeway != "" {
				e = e.with("WXTOKEN_LEEWAY", tc.leeway)
			}
			s := startServer(t, e)
			if c := postJSON(t, s.URL+"/v1/session/check", issued.Token, nil); c.Status != tc.status {
				t.Fatalf("status %d, want %d: %s", c.Status, tc.status, c.Body)
			}
		})
	}
}
