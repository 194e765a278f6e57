package wechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/wxtoken/wxtoken/secret"
)

// DefaultBaseURL is WeChat's API host.
const DefaultBaseURL = "https://api.weixin.qq.com"

// MaxCallTime is the longest one Client method (a login, a phone number, a
// session check) may take when each request to WeChat may take timeout
// (Config.Timeout; 0 means DefaultTimeout): an access_token fetch with its
// retries, bounded by tokenFetchBudget, and 5 s for the call it serves.
// Callers bound a request's WeChat work by it instead of mirroring the
// retry policy.
func MaxCallTime(timeout time.Duration) time.Duration {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return tokenFetchBudget(timeout) + 5*time.Second
}

// Defaults for Config's zero values.
const (
	DefaultTimeout          = 5 * time.Second
	DefaultMaxConcurrent    = 64
	DefaultBreakerThreshold = 5
	DefaultBreakerCooldown  = 10 * time.Second
)

// maxAnswerBytes bounds what is read of an answer: WeChat's are a few
// hundred bytes, so a huge body is a fault, not data.
const maxAnswerBytes = 64 << 10

// maxHeaderBytes bounds an answer's status line and headers, which WeChat
// keeps to a few hundred bytes; net/http's default would read 10 MB.
const maxHeaderBytes = 8 << 10

// Credentials are one mini program's appid and appsecret. They are looked
// up per request, so one deployment can serve several mini programs.
type Credentials struct {
	AppID  string
	Secret secret.String
}

// Session is what jscode2session answers for a login code.
type Session struct {
	OpenID     string
	UnionID    string
	SessionKey secret.String
}

// Watermark is WeChat's stamp on data it hands out: which app it was for.
type Watermark struct {
	AppID     string `json:"appid"`
	Timestamp int64  `json:"timestamp"`
}

// PhoneInfo is a user's phone number as getuserphonenumber answers it.
type PhoneInfo struct {
	PhoneNumber     string    `json:"phoneNumber"`
	PurePhoneNumber string    `json:"purePhoneNumber"`
	CountryCode     string    `json:"countryCode"`
	Watermark       Watermark `json:"watermark"`
}

// Config is what a Client needs. Zero values take the defaults above.
type Config struct {
	// BaseURL is WeChat's API host; tests and dev mode point it at an emulator.
	BaseURL string
	// Timeout bounds each call to WeChat, connection included.
	Timeout time.Duration
	// MaxConcurrent bounds calls in flight; more fail fast as Overloaded.
	// Logins and the other calls each have a pool of this size, so a flood
	// of token holders' calls (phone numbers, session checks) never starves
	// new logins.
	MaxConcurrent int
	// BreakerThreshold consecutive failures open the circuit for BreakerCooldown.
	BreakerThreshold int
	BreakerCooldown  time.Duration
	Logger           *slog.Logger
	// HTTPClient replaces the clients built from the settings above. Login
	// and session_key reset requests are made unreplayable for net/http's
	// Transport; a client with another transport must not re-send requests
	// by itself: login codes are single-use, and a reset re-sent after
	// WeChat acted on it loses the new key.
	HTTPClient *http.Client
	Now        func() time.Time
	// Observer is told about every call, access_token fetch and breaker
	// state, for metrics; nil reports nothing.
	Observer Observer
}

// Client calls WeChat's server APIs. It is safe for concurrent use and
// holds only a cache of access_tokens, never per-user state.
type Client struct {
	base *url.URL
	cfg  Config
	http *http.Client
	// login sends single-use codes (and session_key resets, see
	// unreplayable), over HTTP/1.1 connections from a pool of at most
	// MaxConcurrent, reused between requests. The requests it sends are
	// never replayable (see singleUse), so net/http cannot re-send a code
	// or a reset when a reused connection breaks.
	login *http.Client
	// slots bounds calls made for token holders and access_token fetches;
	// loginSlots bounds logins, so neither kind can starve the other.
	slots      chan struct{}
	loginSlots chan struct{}
	breakers   breakers
	log        *slog.Logger
	tokens     tokenCache
}

// NewClient checks cfg and builds a Client.
func NewClient(cfg Config) (*Client, error) {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	base, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" {
		return nil, fmt.Errorf("wechat: base URL %q must be an absolute http(s) URL", cfg.BaseURL)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = DefaultMaxConcurrent
	}
	if cfg.BreakerThreshold <= 0 {
		cfg.BreakerThreshold = DefaultBreakerThreshold
	}
	if cfg.BreakerCooldown <= 0 {
		cfg.BreakerCooldown = DefaultBreakerCooldown
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Observer == nil {
		cfg.Observer = noObserver{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hc, login := cfg.HTTPClient, cfg.HTTPClient
	if hc == nil {
		dialer := &net.Dialer{Timeout: min(cfg.Timeout, 2*time.Second), KeepAlive: 30 * time.Second}
		hc = &http.Client{
			Transport: &http.Transport{
				Proxy:                  http.ProxyFromEnvironment,
				DialContext:            dialer.DialContext,
				TLSHandshakeTimeout:    min(cfg.Timeout, 5*time.Second),
				ResponseHeaderTimeout:  cfg.Timeout,
				MaxIdleConns:           cfg.MaxConcurrent,
				MaxIdleConnsPerHost:    cfg.MaxConcurrent,
				IdleConnTimeout:        90 * time.Second,
				MaxResponseHeaderBytes: maxHeaderBytes,
				ForceAttemptHTTP2:      true,
			},
			// WeChat never redirects; following one could send the query's
			// secrets to another host.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		login = &http.Client{Transport: loginTransport(hc.Transport.(*http.Transport), cfg.MaxConcurrent), CheckRedirect: hc.CheckRedirect}
	}
	c := &Client{base: base, cfg: cfg, http: hc, login: login, log: log,
		slots: make(chan struct{}, cfg.MaxConcurrent), loginSlots: make(chan struct{}, cfg.MaxConcurrent)}
	c.breakers = breakers{client: c, m: map[string]*gobreaker.CircuitBreaker[[]byte]{}}
	c.tokens = tokenCache{client: c, entries: map[string]cachedToken{}}
	return c, nil
}

// loginIdleTimeout closes pooled login connections well before WeChat's
// own keep-alive timeout is likely to: a login sent just as WeChat closes
// the connection fails (it cannot be re-sent), so idle connections are not
// kept to the edge of the server's patience.
const loginIdleTimeout = 30 * time.Second

// loginTransport is base's settings for logins: HTTP/1.1 only, whose retry
// rules singleUse defeats (HTTP/2's transport retries on its own terms), and
// a pool of at most size connections, reused between logins.
func loginTransport(base *http.Transport, size int) *http.Transport {
	tr := base.Clone()
	tr.ForceAttemptHTTP2 = false
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	tr.MaxConnsPerHost = size
	tr.MaxIdleConns = size
	tr.MaxIdleConnsPerHost = size
	tr.IdleConnTimeout = loginIdleTimeout
	return tr
}

// singleUse is the body of every login request. net/http's Transport re-sends
// a request on a new connection when a reused one fails, but only when the
// request is replayable (Request.isReplayable: no body, http.NoBody, or a
// GetBody to rewind it, or when nothing was written and the body is empty
// or rewindable: persistConn.shouldRetryRequest). A non-nil body without
// GetBody is neither, so a login is sent at most once whatever happens to the
// connection. The request's TransferEncoding is "identity", which
// Request.Write documents as sending the body unframed instead of chunked;
// the body being empty, the GET goes out exactly as one without a body
// (no Content-Length, no Transfer-Encoding, no bytes after the headers).
type singleUse struct{}

func (singleUse) Read([]byte) (int, error) { return 0, io.EOF }
func (singleUse) Close() error             { return nil }

// WriteTo writes the empty body. Without it the Transport copies the body
// through net.TCPConn.ReadFrom's generic path, which allocates a 32 KiB
// buffer for every login; it changes nothing net/http may replay (that
// depends on GetBody, which stays nil).
func (singleUse) WriteTo(io.Writer) (int64, error) { return 0, nil }

// unreplayable reports whether op's request must reach WeChat at most once,
// so it goes out on the login client with a singleUse body: a login code is
// single-use, and a resetusersessionkey replaces the key it is signed with,
// so a re-sent reset is refused (87009) and the new key it made is lost.
func unreplayable(op string) bool {
	return op == OpCode2Session || op == OpResetSessionKey
}

// Code2Session exchanges a wx.login() code for the user's identity. The
// code is single-use, so it is sent exactly once and never retried.
func (c *Client) Code2Session(ctx context.Context, app Credentials, code string) (Session, error) {
	q := url.Values{
		"appid":      {app.AppID},
		"secret":     {app.Secret.Reveal()},
		"js_code":    {code},
		"grant_type": {"authorization_code"},
	}
	var ans struct {
		OpenID     string        `json:"openid"`
		UnionID    string        `json:"unionid"`
		SessionKey secret.String `json:"session_key"`
		errAnswer
	}
	hide := newRedactor(app.Secret.Reveal(), code)
	if err := c.call(ctx, app.AppID, OpCode2Session, http.MethodGet, "/sns/jscode2session", q, nil, &ans, hide); err != nil {
		c.logConfigFault(err, app)
		return Session{}, err
	}
	sk := ans.SessionKey
	var bad string
	switch {
	case !validID(ans.OpenID):
		bad = "openid is not 1 to 64 characters of A-Z a-z 0-9 _ -"
	case ans.UnionID != "" && !validID(ans.UnionID):
		bad = "unionid is not 1 to 64 characters of A-Z a-z 0-9 _ -"
	case !ValidSessionKey(sk):
		bad = "session_key is not base64 of 16 bytes"
	}
	if bad != "" {
		return Session{}, &UpstreamError{Op: OpCode2Session, Kind: BadAnswer, Err: errors.New(bad)}
	}
	return Session{OpenID: ans.OpenID, UnionID: ans.UnionID, SessionKey: sk}, nil
}

// maxIDLen bounds openids and unionids. WeChat's are 28 characters; the
// bound leaves room for a change of format while keeping a token small
// enough that the service accepts it back.
const maxIDLen = 64

// validID reports whether id looks like a WeChat openid or unionid: 1 to
// maxIDLen characters of the URL-safe base64 alphabet. Anything else is a
// faulty answer, and would make a token the service itself refuses.
func validID(id string) bool {
	if id == "" || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// PhoneNumber redeems a getPhoneNumber button code. openid makes WeChat
// check that the code belongs to this user.
func (c *Client) PhoneNumber(ctx context.Context, app Credentials, code, openid string) (PhoneInfo, error) {
	body, err := json.Marshal(map[string]string{"code": code, "openid": openid})
	if err != nil {
		return PhoneInfo{}, fmt.Errorf("wechat: %s: %w", OpPhoneNumber, err)
	}
	var ans struct {
		PhoneInfo *PhoneInfo `json:"phone_info"`
		errAnswer
	}
	err = c.withAccessToken(ctx, app, func(tok string) error {
		ans.PhoneInfo = nil
		return c.call(ctx, app.AppID, OpPhoneNumber, http.MethodPost, "/wxa/business/getuserphonenumber",
			url.Values{"access_token": {tok}}, body, &ans, newRedactor(tok, code))
	})
	if err != nil {
		return PhoneInfo{}, err
	}
	if ans.PhoneInfo == nil || ans.PhoneInfo.PurePhoneNumber == "" {
		return PhoneInfo{}, &UpstreamError{Op: OpPhoneNumber, Kind: BadAnswer, Err: errors.New("answer lacks phone_info")}
	}
	return *ans.PhoneInfo, nil
}

// CheckSession asks WeChat whether sessionKey is still the user's current
// one. A replaced or expired key is (false, nil): the mini program should
// call wx.login() again, which is not an error.
func (c *Client) CheckSession(ctx context.Context, app Credentials, openid string, sessionKey secret.String) (bool, error) {
	sig := sessionSignature(sessionKey)
	var ans errAnswer
	err := c.withAccessToken(ctx, app, func(tok string) error {
		return c.call(ctx, app.AppID, OpCheckSession, http.MethodGet, "/wxa/checksession", url.Values{
			"access_token": {tok}, "signature": {sig}, "openid": {openid}, "sig_method": {"hmac_sha256"},
		}, nil, &ans, newRedactor(tok, sig))
	})
	var ae *APIError
	if errors.As(err, &ae) && ae.Code == CodeInvalidSignature {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

// errAnswer is the errcode/errmsg pair every WeChat answer may carry.
type errAnswer struct {
	Errcode int    `json:"errcode"`
	Errmsg  string `json:"errmsg"`
}

func (e *errAnswer) apiError(op string) error {
	if e.Errcode == 0 {
		return nil
	}
	return &APIError{Op: op, Code: e.Errcode, Msg: e.Errmsg}
}

type apiAnswer interface{ apiError(op string) error }

// call makes one request to WeChat and decodes its JSON answer into out.
// It takes a slot (or fails fast), goes through appID's circuit breaker, and
// bounds the whole exchange by the configured timeout. Whatever WeChat's
// answer puts into the error (a parse error quoting its status line, an
// errmsg) has hide's values replaced before it is logged or returned.
func (c *Client) call(ctx context.Context, appID, op, method, path string, q url.Values, body []byte, out apiAnswer, hide redactor) error {
	pool := c.slots
	if op == OpCode2Session {
		pool = c.loginSlots
	}
	if err := acquire(ctx, pool, op); err != nil {
		return err
	}
	defer func() { <-pool }()

	// A caller whose own deadline has passed (a request that took long to
	// arrive) says nothing about WeChat: fail it before the breaker counts it.
	if err := ctx.Err(); err != nil {
		return transportError(ctx, op, err)
	}
	start := c.cfg.Now()
	raw, err := c.breakers.get(appID).Execute(func() ([]byte, error) { return c.roundTrip(ctx, op, method, path, q, body) })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return &UpstreamError{Op: op, Kind: CircuitOpen, RetryAfter: c.cfg.BreakerCooldown, Err: errors.New("recent calls failed")}
	}
	if err != nil {
		err = hide.upstream(err)
		c.cfg.Observer.WeChatCall(op, err, c.cfg.Now().Sub(start))
		c.log.WarnContext(ctx, "wechat call failed", "op", op, "err", err.Error(), "duration", c.cfg.Now().Sub(start).String())
		return err
	}
	if err := json.Unmarshal(raw, out); err != nil {
		err := &UpstreamError{Op: op, Kind: BadAnswer, Err: errors.New("answer is not the expected JSON")}
		c.cfg.Observer.WeChatCall(op, err, c.cfg.Now().Sub(start))
		return err
	}
	apiErr := out.apiError(op)
	took := c.cfg.Now().Sub(start)
	c.cfg.Observer.WeChatCall(op, apiErr, took)
	errcode := 0
	if apiErr != nil {
		var ae *APIError
		errors.As(apiErr, &ae)
		ae.Msg = hide.String(ae.Msg)
		errcode = ae.Code
	}
	// Asked first: the line is off by default, and building its
	// arguments on every call would cost every login.
	if c.log.Enabled(ctx, slog.LevelDebug) {
		c.log.LogAttrs(ctx, slog.LevelDebug, "wechat call", slog.String("op", op), slog.Int("errcode", errcode),
			slog.String("duration", took.String()))
	}
	return apiErr
}

// slotWait is how long a call waits for a free slot before failing fast:
// long enough to smooth a burst, short enough that requests do not pile up.
const slotWait = 100 * time.Millisecond

// acquire takes one of pool's slots, waiting at most slotWait.
func acquire(ctx context.Context, pool chan struct{}, op string) error {
	select {
	case pool <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(slotWait)
	defer t.Stop()
	select {
	case pool <- struct{}{}:
		return nil
	case <-ctx.Done():
		return transportError(ctx, op, ctx.Err())
	case <-t.C:
		return &UpstreamError{Op: op, Kind: Overloaded, RetryAfter: time.Second, Err: errors.New("too many calls in flight")}
	}
}

// roundTrip is the HTTP exchange. Errors never include the URL, whose query
// holds the appsecret or access_token.
func (c *Client) roundTrip(ctx context.Context, op, method, path string, q url.Values, body []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	u := *c.base
	u.Path += path
	u.RawQuery = q.Encode()
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, &UpstreamError{Op: op, Kind: Unreachable, Err: errors.New("cannot build request")}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	hc := c.http
	if unreplayable(op) {
		hc = c.login
		req.Body = singleUse{}
		req.TransferEncoding = []string{"identity"}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, transportError(ctx, op, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err != nil {
		return nil, transportError(ctx, op, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &UpstreamError{Op: op, Kind: BadStatus, Status: resp.StatusCode}
	}
	// WeChat labels JSON as text/plain, so the content type is not checked.
	if len(raw) > maxAnswerBytes || !json.Valid(raw) {
		return nil, &UpstreamError{Op: op, Kind: BadAnswer, Err: errors.New("answer is not JSON")}
	}
	return raw, nil
}

// transportError classifies a failed exchange without keeping *url.Error,
// whose text names the URL and so the secrets in its query.
func transportError(ctx context.Context, op string, err error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return &UpstreamError{Op: op, Kind: Unreachable, Err: context.Canceled}
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return &UpstreamError{Op: op, Kind: Timeout, Err: errors.New("no answer in time")}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return &UpstreamError{Op: op, Kind: Unreachable, Err: errors.New(redactURLs(err.Error()))}
}

// redactor replaces a request's secret values (appsecret, access_token,
// code) wherever they appear in text WeChat's answer put into an error:
// raw, query-escaped and JSON-escaped, the forms an echo of the request
// carries. Matching by value, not by shape, catches a query string echoed
// without its "?" as a status line or an errmsg.
type redactor []string

// minRedacted is the shortest code redacted. Codes come from callers, and
// one could send a short word to blank it out of every message; WeChat's
// codes are 32 characters.
const minRedacted = 8

// newRedactor hides secret (the appsecret or an access_token) and the
// caller's codes that are at least minRedacted long.
func newRedactor(secret string, codes ...string) redactor {
	var r redactor
	for i, v := range append([]string{secret}, codes...) {
		if v == "" || (i > 0 && len(v) < minRedacted) {
			continue
		}
		js, _ := json.Marshal(v)
		r = append(r, v, url.QueryEscape(v), string(js[1:len(js)-1]))
	}
	return r
}

// String is s with every hidden value replaced.
func (r redactor) String(s string) string {
	for _, v := range r {
		s = strings.ReplaceAll(s, v, "[redacted]")
	}
	return s
}

// upstream redacts the cause of an UpstreamError, keeping its type and
// kind; other errors carry no text from WeChat.
func (r redactor) upstream(err error) error {
	var ue *UpstreamError
	if !errors.As(err, &ue) || ue.Err == nil {
		return err
	}
	msg := ue.Err.Error()
	if red := r.String(msg); red != msg {
		cp := *ue
		cp.Err = errors.New(red)
		return &cp
	}
	return err
}

// redactURLs drops anything that looks like a URL from a message.
func redactURLs(s string) string {
	fields := strings.Fields(s)
	for i, f := range fields {
		if strings.Contains(f, "://") || strings.Contains(f, "?") {
			fields[i] = "[url]"
		}
	}
	return strings.Join(fields, " ")
}

// logConfigFault tells operators when WeChat refuses the app's own
// credentials: a deployment fault, not the caller's.
func (c *Client) logConfigFault(err error, app Credentials) {
	var ae *APIError
	if errors.As(err, &ae) && (ae.Code == CodeInvalidAppID || ae.Code == CodeInvalidAppSecret) {
		c.log.Error("WeChat refused the app credentials: check the appid and appsecret configured for it",
			"op", ae.Op, "appid", app.AppID, "errcode", ae.Code)
	}
}

// jitter spreads retries so replicas do not retry in step.
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
