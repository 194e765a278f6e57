package main

import (
	"context"
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
	t.Parallel()
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
	t.Parallel()
	f := newFixture(t, testAppID)
	ring, err := keys.NewDir(f.keysDir, 3*time.Hour, nil).Load()
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
