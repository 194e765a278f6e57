package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wxtoken/wxtoken/emulator"
)

// floorFixture is the floor's handler in front of the WeChat emulator,
// both on real loopback listeners.
type floorFixture struct {
	srv   *httptest.Server
	key   *ecdsa.PrivateKey
	users *userMap
	appID string
}

func newFloorFixture(t *testing.T) *floorFixture {
	t.Helper()
	const appID, sec = "wxbench00000001", "benchsecret"
	emu := httptest.NewServer(emulator.New(emulator.Config{Apps: map[string]string{appID: sec}}))
	t.Cleanup(emu.Close)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	users := &userMap{m: map[string]session{}}
	c := &contender{appID: appID, secret: sec, upstream: emu.URL, client: newUpstreamClient(),
		issue:  func(_ context.Context, s session) (string, error) { return signES256(key, appID, s.OpenID) },
		lookup: users.lookup}
	srv := httptest.NewServer(c.routes())
	t.Cleanup(srv.Close)
	return &floorFixture{srv: srv, key: key, users: users, appID: appID}
}

func (f *floorFixture) post(t *testing.T, path, bearer string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// TestFloorLogin: a login calls WeChat and answers a compact ES256 JWS
// that the floor's public key verifies; a code WeChat refuses is a 502,
// and a code is good once.
func TestFloorLogin(t *testing.T) {
	f := newFloorFixture(t)
	status, body := f.post(t, "/v1/login", "", []byte(`{"code":"c1"}`))
	if status != http.StatusOK {
		t.Fatalf("login: %d %s", status, body)
	}
	var ans struct {
		AccessToken string `json:"access_token"`
		OpenID      string `json:"openid"`
	}
	if err := json.Unmarshal(body, &ans); err != nil || ans.OpenID == "" {
		t.Fatalf("login answered %s", body)
	}
	parts := strings.Split(ans.AccessToken, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %q", ans.AccessToken)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		t.Fatalf("signature %q: %v", parts[2], err)
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(&f.key.PublicKey, digest[:], r, s) {
		t.Fatal("the floor's signature does not verify")
	}
	claims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if !bytes.Contains(claims, []byte(`"sub":"`+ans.OpenID+`"`)) {
		t.Fatalf("claims %s do not name the user", claims)
	}
	for _, tc := range []struct {
		name, body string
		want       int
	}{
		{"code used twice", `{"code":"c1"}`, http.StatusBadGateway},
		{"code WeChat refuses", `{"code":"err-40029"}`, http.StatusBadGateway},
		{"no code", `{}`, http.StatusBadRequest},
		{"not JSON", `code=c2`, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, body := f.post(t, "/v1/login", "", []byte(tc.body)); status != tc.want {
				t.Fatalf("%d %s, want %d", status, body, tc.want)
			}
		})
	}
}

// TestFloorBearerRoutes: the bodies the bench sends decrypt to the user's
// own data on the floor, and anything else is refused.
func TestFloorBearerRoutes(t *testing.T) {
	f := newFloorFixture(t)
	u := benchUser{Bearer: "id-1", OpenID: "oUser1", SessionKey: newSessionKey()}
	f.users.m[u.Bearer] = session{OpenID: u.OpenID, SessionKey: u.SessionKey}
	dec, info, err := userDataBodies(f.appID, u)
	if err != nil {
		t.Fatal(err)
	}
	otherApp, _, err := userDataBodies("wxsomeoneelse", u)
	if err != nil {
		t.Fatal(err)
	}
	forged := bytes.Replace(info, []byte(`Guangzhou`), []byte(`Shenzhen!`), 1)
	tests := []struct {
		name, path, bearer string
		body               []byte
		want               int
		wantBody           string
	}{
		{"decrypt", "/v1/decrypt", u.Bearer, dec, http.StatusOK, `"openId":"oUser1"`},
		{"userinfo", "/v1/userinfo", u.Bearer, info, http.StatusOK, `"profile":{"nickName":"Band"`},
		{"unknown bearer", "/v1/decrypt", "nobody", dec, http.StatusUnauthorized, ""},
		{"no bearer", "/v1/decrypt", "", dec, http.StatusUnauthorized, ""},
		{"data for another app", "/v1/decrypt", u.Bearer, otherApp, http.StatusBadRequest, ""},
		{"rawData changed after signing", "/v1/userinfo", u.Bearer, forged, http.StatusBadRequest, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := f.post(t, tc.path, tc.bearer, tc.body)
			if status != tc.want || !bytes.Contains(body, []byte(tc.wantBody)) {
				t.Fatalf("%d %s, want %d with %s", status, body, tc.want, tc.wantBody)
			}
		})
	}
}
