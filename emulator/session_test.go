package emulator_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"testing"

	"github.com/wxtoken/wxtoken/emulator"
)

func signed(tok, openid, sk string) url.Values {
	m := hmac.New(sha256.New, []byte(sk))
	return url.Values{"access_token": {tok}, "openid": {openid}, "signature": {hex.EncodeToString(m.Sum(nil))}, "sig_method": {"hmac_sha256"}}
}

// TestResetUserSessionKey: a reset signed with the current key answers a
// new one; the old key then fails checksession and reset alike.
func TestResetUserSessionKey(t *testing.T) {
	e, base := newServer(t, emulator.Config{})
	tok := stableToken(t, base, false).body["access_token"].(string)
	u := login(t, base, "reset-user")
	openid, sk := u.body["openid"].(string), u.body["session_key"].(string)
	a := get(t, base, "/wxa/resetusersessionkey", signed(tok, openid, sk))
	newKey, _ := a.body["session_key"].(string)
	if errcode(a) != 0 || a.body["openid"] != openid || len(newKey) != 24 || newKey == sk || e.CurrentSessionKey(appID, openid) != newKey {
		t.Fatalf("reset: %s", a.raw)
	}
	for _, path := range []string{"/wxa/checksession", "/wxa/resetusersessionkey"} {
		if a := get(t, base, path, signed(tok, openid, sk)); errcode(a) != 87009 {
			t.Errorf("%s with the old key: %s, want 87009", path, a.raw)
		}
	}
	if a := get(t, base, "/wxa/checksession", signed(tok, openid, newKey)); errcode(a) != 0 {
		t.Errorf("checksession with the new key: %s", a.raw)
	}
	if a := get(t, base, "/wxa/resetusersessionkey", signed("bad", openid, newKey)); errcode(a) != 40001 {
		t.Errorf("bad access_token: %s", a.raw)
	}
}

// TestUserRiskRankAndPersons: a person has one unionid across apps and an
// openid per app; getuserriskrank answers the rank set for the user.
func TestUserRiskRankAndPersons(t *testing.T) {
	const other = "wx9999888877776666"
	e, base := newServer(t, emulator.Config{Apps: map[string]string{appID: secret, other: secret}, UnionID: true})
	a := login(t, base, "ann~1")
	b := get(t, base, "/sns/jscode2session", url.Values{"appid": {other}, "secret": {secret}, "js_code": {"ann~2"}, "grant_type": {"authorization_code"}})
	if a.body["unionid"] == nil || a.body["unionid"] != b.body["unionid"] || a.body["openid"] == b.body["openid"] {
		t.Fatalf("one person in two apps: %s / %s", a.raw, b.raw)
	}
	if a.body["openid"] != emulator.OpenID(appID, "ann") {
		t.Error("OpenID differs from the login's")
	}
	tok := stableToken(t, base, false).body["access_token"].(string)
	e.SetRiskRank(appID, emulator.OpenID(appID, "ann"), 2)
	ask := func(body string) answer {
		return post(t, base, "/wxa/getuserriskrank", url.Values{"access_token": {tok}}, body)
	}
	r := ask(`{"appid":"` + appID + `","openid":"` + emulator.OpenID(appID, "ann") + `","scene":0,"client_ip":"203.0.113.9"}`)
	if errcode(r) != 0 || r.body["risk_rank"] != float64(2) {
		t.Errorf("rank: %s", r.raw)
	}
	for _, bad := range []string{
		`{"appid":"` + other + `","openid":"o","scene":0,"client_ip":"203.0.113.9"}`, // another app's appid
		`{"appid":"` + appID + `","openid":"o","client_ip":"203.0.113.9"}`,           // no scene
		`{"appid":"` + appID + `","openid":"o","scene":0}`,                           // no client_ip
	} {
		if r := ask(bad); errcode(r) != 47001 {
			t.Errorf("%s: %s, want 47001", bad, r.raw)
		}
	}
}

// TestFaultForOneApp and AnySecret: a fault with AppID hits that app only;
// AnySecret serves unlisted appids.
func TestFaultForOneAppAndAnySecret(t *testing.T) {
	const other = "wx9999888877776666"
	e, base := newServer(t, emulator.Config{AnySecret: "dev-secret"})
	e.SetFault("/sns/jscode2session", emulator.Fault{Errcode: -1, AppID: other})
	if a := login(t, base, "f1"); errcode(a) != 0 {
		t.Errorf("listed app hit by another's fault: %s", a.raw)
	}
	q := url.Values{"appid": {other}, "secret": {"dev-secret"}, "js_code": {"f2"}, "grant_type": {"authorization_code"}}
	if a := get(t, base, "/sns/jscode2session", q); errcode(a) != -1 {
		t.Errorf("faulted app: %s", a.raw)
	}
	e.SetFault("/sns/jscode2session", emulator.Fault{})
	if a := get(t, base, "/sns/jscode2session", q); errcode(a) != 0 {
		t.Errorf("unlisted appid with AnySecret: %s", a.raw)
	}
	q.Set("secret", "wrong")
	q.Set("js_code", "f3")
	if a := get(t, base, "/sns/jscode2session", q); errcode(a) != 40125 {
		t.Errorf("unlisted appid, wrong secret: %s", a.raw)
	}
}
