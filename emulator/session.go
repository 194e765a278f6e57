package emulator

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

// Codes of the form <person>~<anything> log in as that person: the same
// person gets an openid of their own in each app and one unionid across
// them, as WeChat does for apps under one Open Platform account.

// SetRiskRank makes getuserriskrank answer rank for appid's user openid,
// whether or not that user has logged in yet.
func (e *Emulator) SetRiskRank(appid, openid string, rank int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.risk[appid+"|"+openid] = rank
	if u, ok := e.users[appid+"|"+openid]; ok {
		u.riskRank = rank
	}
}

// OpenID is the openid the person gets in appid when logging in with a code
// <person>~<anything>, so tests can set a rank before the login.
func OpenID(appid, person string) string { return derive("o", appid+"|user|"+person) }

// requestApp is the app a request is made for: its appid parameter, its
// access_token's app, or the appid in a stable_token body. "" when none.
func (e *Emulator) requestApp(r *http.Request) string {
	q := r.URL.Query()
	if a := q.Get("appid"); a != "" {
		return a
	}
	if tok := q.Get("access_token"); tok != "" {
		e.mu.Lock()
		defer e.mu.Unlock()
		if t, ok := e.tokens[tok]; ok {
			return t.appID
		}
		return ""
	}
	if r.URL.Path == "/cgi-bin/stable_token" && r.Body != nil {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		r.Body = io.NopCloser(bytes.NewReader(body))
		var req struct {
			AppID string `json:"appid"`
		}
		_ = json.Unmarshal(body, &req)
		return req.AppID
	}
	return ""
}

// sessionUser checks a request signed with the user's session_key, as
// checksession and resetusersessionkey are; it answers the app and openid,
// or the errcode to fail with.
func (e *Emulator) sessionUser(r *http.Request) (appid, openid string, errcode int) {
	q := r.URL.Query()
	appid, n := e.checkToken(q.Get("access_token"))
	if n != 0 {
		return "", "", n
	}
	if q.Get("sig_method") != "hmac_sha256" {
		return "", "", 87010
	}
	openid = q.Get("openid")
	e.mu.Lock()
	u, ok := e.users[appid+"|"+openid]
	var sk string
	if ok {
		sk = u.sessionKey
	}
	e.mu.Unlock()
	m := hmac.New(sha256.New, []byte(sk))
	want := hex.EncodeToString(m.Sum(nil))
	if !ok || subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(q.Get("signature")))) != 1 {
		return "", "", 87009
	}
	return appid, openid, 0
}

// resetSessionKey is /wxa/resetusersessionkey: the user gets a new
// session_key, and the old one stops working at once.
func (e *Emulator) resetSessionKey(w http.ResponseWriter, r *http.Request) {
	appid, openid, n := e.sessionUser(r)
	if n != 0 {
		e.fail(w, r, n)
		return
	}
	sk := newSessionKey()
	e.mu.Lock()
	if u, ok := e.users[appid+"|"+openid]; ok {
		u.sessionKey = sk
	}
	e.mu.Unlock()
	e.ok(w, r, map[string]any{"errcode": 0, "errmsg": "ok", "openid": openid, "session_key": sk})
}

// riskRank is /wxa/getuserriskrank: the rank SetRiskRank set for the user,
// 0 otherwise.
func (e *Emulator) riskRank(w http.ResponseWriter, r *http.Request) {
	appid, n := e.checkToken(r.URL.Query().Get("access_token"))
	if n != 0 {
		e.fail(w, r, n)
		return
	}
	var req struct {
		AppID    string `json:"appid"`
		OpenID   string `json:"openid"`
		Scene    *int   `json:"scene"`
		ClientIP string `json:"client_ip"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil ||
		req.AppID != appid || req.OpenID == "" || req.Scene == nil || (*req.Scene != 0 && *req.Scene != 1) || req.ClientIP == "" {
		e.fail(w, r, 47001)
		return
	}
	e.mu.Lock()
	rank := e.risk[appid+"|"+req.OpenID]
	if u, ok := e.users[appid+"|"+req.OpenID]; ok {
		rank = u.riskRank
	}
	e.mu.Unlock()
	e.ok(w, r, map[string]any{"errcode": 0, "errmsg": "getuserriskrank succ", "risk_rank": rank, "unoin_id": 0})
}
