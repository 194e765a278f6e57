// Package emulator is a WeChat server of our own, for dev mode and tests.
//
// It answers the endpoints wxtoken calls the way WeChat does: JSON bodies
// labelled Content-Type: text/plain, HTTP 200 with a non-zero errcode for
// errors, single-use login codes, one current session_key per user, a
// stable access_token in normal mode. Faults (hangs, garbage, 5xx, resets,
// connections closed after the request was acted on, echoes of the request,
// huge headers, errcodes, odd expires_in) can be switched on per path to
// test how callers cope, for every app or for one (Fault.AppID). It also
// answers resetusersessionkey and getuserriskrank (ranks set with
// SetRiskRank), serves several apps, and with codes of the form
// <person>~<anything> gives one person one unionid across apps.
package emulator

import (
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config describes the apps the emulator knows.
type Config struct {
	// Apps maps appid to appsecret.
	Apps map[string]string
	// UnionID makes every login answer a unionid, as for an app bound to
	// an Open Platform account.
	UnionID bool
	// AnySecret, when set, makes the emulator serve any appid it does not
	// list, with this appsecret (dev mode serves any appid).
	AnySecret string
	// ReusableCodes lets a js_code log in more than once (always as the
	// same user). WeChat refuses a reused code with 40163.
	ReusableCodes bool
	Now           func() time.Time
	Logger        *slog.Logger
}

// Fault makes a path misbehave, to test callers against a failing WeChat.
type Fault struct {
	// Hang waits this long (or until the client goes away) before acting.
	Hang time.Duration
	// Garbage answers 200 with an HTML page instead of JSON.
	Garbage bool
	// HTTPStatus answers this status with an HTML body.
	HTTPStatus int
	// Reset closes the TCP connection abruptly, with no answer.
	Reset bool
	// CloseAfterRead acts on the request (a login consumes its code), then
	// closes the connection cleanly (FIN, not RST) without answering: WeChat
	// accepted the login but the answer was lost, as when a server's
	// keep-alive timeout fires while a request arrives on a reused
	// connection. A client cannot tell whether the code was consumed.
	CloseAfterRead bool
	// Errcode answers {"errcode": Errcode}.
	Errcode int
	// Times is how many requests the fault hits; 0 means every request
	// until cleared.
	Times int
	// PassThrough answers normally after Hang. A Hang alone, without it,
	// closes the connection with no answer.
	PassThrough bool
	// EchoStatus answers a malformed status line made of the request's
	// query string and body, as a broken proxy might: a client's parse
	// error then quotes the request's secrets.
	EchoStatus bool
	// EchoErrmsg answers errcode -1 whose errmsg is the request's query
	// string and body.
	EchoErrmsg bool
	// ExpiresIn answers stable_token normally, but with this expires_in.
	ExpiresIn int64
	// HeaderBytes answers normally, but with an extra header this many
	// bytes long, as a broken or hostile server might.
	HeaderBytes int
	// Watermark answers normally, but phone numbers carry this appid in
	// their watermark, as data made for another app would.
	Watermark string
	// AppID, when set, limits the fault to requests made for that app (by
	// their appid or their access_token's), as when WeChat fails one mini
	// program and not the others.
	AppID string
}

func (f Fault) zero() bool { return f == Fault{} }

type user struct {
	sessionKey string
	riskRank   int
}

type accessToken struct {
	appID   string
	expires time.Time
	expired bool // ExpireAccessTokens was called
}

// Emulator is an http.Handler answering like api.weixin.qq.com.
type Emulator struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	users     map[string]*user // appid|openid
	usedCodes map[string]bool  // appid|code
	usedPhone map[string]bool  // appid|code
	presets   map[string]preset
	tokens    map[string]*accessToken // token -> info
	current   map[string]string       // appid -> current token
	faults    map[string]*Fault
	calls     map[string]int
	arrivals  map[string]int // js_code -> times it reached jscode2session
	risk      map[string]int // appid|openid -> risk rank set before the user logged in
}

type preset struct{ openid, unionid, sessionKey string }

const tokenLife = 7200 * time.Second

// New builds an emulator for cfg's apps.
func New(cfg Config) *Emulator {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	apps := make(map[string]string, len(cfg.Apps))
	for k, v := range cfg.Apps {
		apps[k] = v
	}
	cfg.Apps = apps
	return &Emulator{
		cfg: cfg, log: log,
		users: map[string]*user{}, usedCodes: map[string]bool{}, usedPhone: map[string]bool{},
		presets: map[string]preset{}, tokens: map[string]*accessToken{}, current: map[string]string{},
		faults: map[string]*Fault{}, calls: map[string]int{}, arrivals: map[string]int{},
		risk: map[string]int{},
	}
}

// PresetLogin makes the next login with code answer exactly this identity,
// so tests can use WeChat's published session_key vectors.
func (e *Emulator) PresetLogin(code, openid, unionid, sessionKey string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.presets[code] = preset{openid, unionid, sessionKey}
}

// SetFault makes path misbehave; Fault{} clears it.
func (e *Emulator) SetFault(path string, f Fault) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if f.zero() {
		delete(e.faults, path)
		return
	}
	e.faults[path] = &f
}

// Calls counts the requests received at path, faulted ones included.
func (e *Emulator) Calls(path string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls[path]
}

// CodeArrivals counts the requests to jscode2session that carried code,
// faulted ones included: a code that arrives twice was sent twice.
func (e *Emulator) CodeArrivals(code string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.arrivals[code]
}

// ExpireAccessTokens makes every access_token issued so far answer 42001,
// as when WeChat's token ran out; the next stable_token issues a new one.
func (e *Emulator) ExpireAccessTokens() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, t := range e.tokens {
		t.expired = true
	}
	e.current = map[string]string{}
}

// CurrentSessionKey is the user's current session_key, "" if none.
func (e *Emulator) CurrentSessionKey(appid, openid string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if u, ok := e.users[appid+"|"+openid]; ok {
		return u.sessionKey
	}
	return ""
}

// ServeHTTP answers one WeChat API call.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	var code string
	if path == "/sns/jscode2session" {
		code = r.URL.Query().Get("js_code")
	}
	appid := e.requestApp(r)
	e.mu.Lock()
	e.calls[path]++
	if code != "" {
		e.arrivals[code]++
	}
	var fault Fault
	if f, ok := e.faults[path]; ok && (f.AppID == "" || f.AppID == appid) {
		fault = *f
		if f.Times > 0 {
			f.Times--
			if f.Times == 0 {
				delete(e.faults, path)
			}
		}
	}
	e.mu.Unlock()

	if !fault.zero() && !e.applyFault(w, r, fault) {
		return
	}
	e.route(w, r, fault)
}

// route answers r as WeChat would.
func (e *Emulator) route(w http.ResponseWriter, r *http.Request, fault Fault) {
	path := r.URL.Path
	switch {
	case path == "/sns/jscode2session" && r.Method == http.MethodGet:
		e.code2Session(w, r)
	case path == "/cgi-bin/stable_token" && r.Method == http.MethodPost:
		e.stableToken(w, r, fault.ExpiresIn)
	case path == "/cgi-bin/token" && r.Method == http.MethodGet:
		e.legacyToken(w, r)
	case path == "/wxa/business/getuserphonenumber" && r.Method == http.MethodPost:
		e.phoneNumber(w, r, fault.Watermark)
	case path == "/wxa/checksession" && r.Method == http.MethodGet:
		e.checkSession(w, r)
	case path == "/wxa/resetusersessionkey" && r.Method == http.MethodGet:
		e.resetSessionKey(w, r)
	case path == "/wxa/getuserriskrank" && r.Method == http.MethodPost:
		e.riskRank(w, r)
	default:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, "<html><body>404 Not Found</body></html>")
	}
}

// applyFault acts out f; it returns true when the request should then be
// answered normally.
func (e *Emulator) applyFault(w http.ResponseWriter, r *http.Request, f Fault) bool {
	if f.Hang > 0 {
		t := time.NewTimer(f.Hang)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return false
		}
	}
	switch {
	case f.Reset:
		reset(w)
		return false
	case f.CloseAfterRead:
		e.route(discard{header: http.Header{}}, r, Fault{})
		closeConn(w)
		return false
	case f.Garbage:
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<html><body>502 Bad Gateway (tengine)</body></html>")
		return false
	case f.HTTPStatus != 0:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(f.HTTPStatus)
		fmt.Fprintf(w, "<html><body>%d</body></html>", f.HTTPStatus)
		return false
	case f.Errcode != 0:
		e.fail(w, r, f.Errcode)
		return false
	case f.EchoStatus:
		echoStatus(w, r)
		return false
	case f.EchoErrmsg:
		writeJSON(w, map[string]any{"errcode": -1, "errmsg": echo(r)})
		return false
	case f.HeaderBytes > 0:
		w.Header().Set("X-Padding", strings.Repeat("a", f.HeaderBytes))
		return true
	case f.PassThrough, f.Watermark != "", f.ExpiresIn != 0:
		return true
	default: // a hang alone: no answer at all
		reset(w)
		return false
	}
}

func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// echo is the request's query string and body, joined by '&'.
func echo(r *http.Request) string {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	return r.URL.RawQuery + "&" + string(body)
}

// echoStatus answers a status line that is echo(r) instead of a status code.
func echoStatus(w http.ResponseWriter, r *http.Request) {
	line := strings.NewReplacer("\r", "", "\n", "", " ", "").Replace(echo(r))
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = fmt.Fprintf(buf, "HTTP/1.1 %s\r\nContent-Length: 0\r\n\r\n", line)
	_ = buf.Flush()
}

// discard is a ResponseWriter whose answer nobody receives.
type discard struct{ header http.Header }

func (d discard) Header() http.Header       { return d.header }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

// closeConn closes the client's connection cleanly, with no answer.
func closeConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	if conn, _, err := hj.Hijack(); err == nil {
		_ = conn.Close()
	}
}

// errmsgs are WeChat's messages for the errcodes the emulator gives.
var errmsgs = map[int]string{
	-1:    "system error",
	40001: "invalid credential, access_token is invalid or not latest",
	40002: "invalid grant_type",
	40013: "invalid appid",
	40029: "invalid code",
	40125: "invalid appsecret",
	40163: "code been used",
	40226: "invalid request, high risk user",
	41008: "missing code",
	42001: "access_token expired",
	45011: "api minute-quota reach limit  mustslower  retry next minute",
	47001: "data format error",
	87009: "invalid signature",
	87010: "invalid sig_method",
}

func (e *Emulator) fail(w http.ResponseWriter, r *http.Request, code int) {
	msg, ok := errmsgs[code]
	if !ok {
		msg = "error"
	}
	e.log.Debug("emulator answer", "method", r.Method, "path", r.URL.Path, "errcode", code)
	writeJSON(w, map[string]any{"errcode": code, "errmsg": msg + ", rid: " + randomHex(6) + "-" + randomHex(4)})
}

func (e *Emulator) ok(w http.ResponseWriter, r *http.Request, v any) {
	e.log.Debug("emulator answer", "method", r.Method, "path", r.URL.Path, "errcode", 0)
	writeJSON(w, v)
}

// writeJSON answers JSON labelled text/plain, as WeChat does.
func writeJSON(w http.ResponseWriter, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write(b)
}

// errCode reads a code of the form err-<errcode>, which answers that errcode.
func errCode(code string) (int, bool) {
	rest, ok := strings.CutPrefix(code, "err-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil && n != 0
}

// checkApp answers WeChat's errcode for bad credentials, or 0.
func (e *Emulator) checkApp(appid, secret string) int {
	want, ok := e.cfg.Apps[appid]
	if !ok && e.cfg.AnySecret != "" && appid != "" {
		want, ok = e.cfg.AnySecret, true
	}
	if !ok {
		return 40013
	}
	if subtle.ConstantTimeCompare([]byte(want), []byte(secret)) != 1 {
		return 40125
	}
	return 0
}

func (e *Emulator) code2Session(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	appid, code := q.Get("appid"), q.Get("js_code")
	if n := e.checkApp(appid, q.Get("secret")); n != 0 {
		e.fail(w, r, n)
		return
	}
	if q.Get("grant_type") != "authorization_code" {
		e.fail(w, r, 40002)
		return
	}
	if code == "" {
		e.fail(w, r, 41008)
		return
	}
	if n, ok := errCode(code); ok {
		e.fail(w, r, n)
		return
	}
	e.mu.Lock()
	if e.usedCodes[appid+"|"+code] && !e.cfg.ReusableCodes {
		e.mu.Unlock()
		e.fail(w, r, 40163)
		return
	}
	e.usedCodes[appid+"|"+code] = true
	p, isPreset := e.presets[code]
	delete(e.presets, code)
	if !isPreset {
		p = preset{openid: derive("o", appid+"|"+code)}
		p.sessionKey = newSessionKey()
		if name, _, ok := strings.Cut(code, "~"); ok && name != "" {
			// One person: an openid of their own per app, one unionid.
			p.openid = derive("o", appid+"|user|"+name)
			if e.cfg.UnionID {
				p.unionid = derive("u", "person|"+name)
			}
		}
	}
	if p.unionid == "" && e.cfg.UnionID {
		p.unionid = derive("u", "union|"+p.openid)
	}
	e.users[appid+"|"+p.openid] = &user{sessionKey: p.sessionKey, riskRank: e.risk[appid+"|"+p.openid]}
	e.mu.Unlock()
	ans := map[string]any{"openid": p.openid, "session_key": p.sessionKey}
	if p.unionid != "" {
		ans["unionid"] = p.unionid
	}
	e.ok(w, r, ans)
}

func (e *Emulator) stableToken(w http.ResponseWriter, r *http.Request, expiresIn int64) {
	var req struct {
		GrantType    string `json:"grant_type"`
		AppID        string `json:"appid"`
		Secret       string `json:"secret"`
		ForceRefresh bool   `json:"force_refresh"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		e.fail(w, r, 47001)
		return
	}
	if n := e.checkApp(req.AppID, req.Secret); n != 0 {
		e.fail(w, r, n)
		return
	}
	if req.GrantType != "client_credential" {
		e.fail(w, r, 40002)
		return
	}
	tok, left := e.issueToken(req.AppID, req.ForceRefresh)
	e.ok(w, r, map[string]any{"access_token": tok, "expires_in": cmp.Or(expiresIn, int64(left.Seconds()))})
}

// legacyToken is /cgi-bin/token: it always issues a new token, invalidating
// the old one (which is why wxtoken never calls it).
func (e *Emulator) legacyToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if n := e.checkApp(q.Get("appid"), q.Get("secret")); n != 0 {
		e.fail(w, r, n)
		return
	}
	tok, left := e.issueToken(q.Get("appid"), true)
	e.ok(w, r, map[string]any{"access_token": tok, "expires_in": int(left.Seconds())})
}

// issueToken answers the app's current token, or a new one when there is
// none or force is set (which invalidates the old one).
func (e *Emulator) issueToken(appid string, force bool) (string, time.Duration) {
	now := e.cfg.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if cur, ok := e.current[appid]; ok && !force {
		t := e.tokens[cur]
		if left := t.expires.Sub(now); left > 0 && !t.expired {
			return cur, left
		}
	}
	if old, ok := e.current[appid]; ok {
		delete(e.tokens, old)
	}
	tok := randomHex(48)
	e.tokens[tok] = &accessToken{appID: appid, expires: now.Add(tokenLife)}
	e.current[appid] = tok
	return tok, tokenLife
}

// checkToken answers the errcode for an access_token, or 0 and its appid.
func (e *Emulator) checkToken(tok string) (string, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.tokens[tok]
	switch {
	case !ok:
		return "", 40001
	case t.expired || !e.cfg.Now().Before(t.expires):
		return "", 42001
	}
	return t.appID, 0
}

func (e *Emulator) phoneNumber(w http.ResponseWriter, r *http.Request, watermark string) {
	appid, n := e.checkToken(r.URL.Query().Get("access_token"))
	if n != 0 {
		e.fail(w, r, n)
		return
	}
	var req struct {
		Code   string `json:"code"`
		OpenID string `json:"openid"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil || req.Code == "" {
		e.fail(w, r, 47001)
		return
	}
	if n, ok := errCode(req.Code); ok {
		e.fail(w, r, n)
		return
	}
	e.mu.Lock()
	used := e.usedPhone[appid+"|"+req.Code]
	e.usedPhone[appid+"|"+req.Code] = true
	e.mu.Unlock()
	if used {
		e.fail(w, r, 40029)
		return
	}
	sum := sha256.Sum256([]byte(appid + "|" + req.Code))
	digits := []byte("13")
	for i := 0; len(digits) < 11; i++ {
		digits = append(digits, '0'+sum[i]%10)
	}
	phone := string(digits)
	e.ok(w, r, map[string]any{"errcode": 0, "errmsg": "ok", "phone_info": map[string]any{
		"phoneNumber": phone, "purePhoneNumber": phone, "countryCode": "86",
		"watermark": map[string]any{"timestamp": e.cfg.Now().Unix(), "appid": cmp.Or(watermark, appid)},
	}})
}

func (e *Emulator) checkSession(w http.ResponseWriter, r *http.Request) {
	if _, _, n := e.sessionUser(r); n != 0 {
		e.fail(w, r, n)
		return
	}
	e.ok(w, r, map[string]any{"errcode": 0, "errmsg": "ok"})
}

// derive makes a stable 28-character WeChat-looking id.
func derive(prefix, seed string) string {
	sum := sha256.Sum256([]byte(seed))
	return prefix + base64.RawURLEncoding.EncodeToString(sum[:])[:27]
}

func newSessionKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
