package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime/metrics"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/wechat"
)

// session is what a login learns from WeChat and a bearer call needs.
type session struct {
	OpenID     string `json:"openid"`
	SessionKey string `json:"session_key"`
}

// registeredUser is a floor user the orchestrator hands over before the
// load: the floor keeps no state from its logins, so bearer calls find
// their session_key in a map filled once (a lookup costing nothing).
type registeredUser struct {
	ID string `json:"id"`
	session
}

// sessionTTL is the table's Redis TTL, the same as wxtoken's token lifetime.
const sessionTTL = 2 * time.Hour

// contender is the floor or the table: the same routes, bodies and answers
// as wxtoken, differing only in what a login leaves behind and how a bearer
// call finds its session.
type contender struct {
	appID    string
	secret   string
	upstream string
	client   *http.Client
	// issue answers a fresh login's bearer credential.
	issue func(ctx context.Context, s session) (string, error)
	// lookup finds the session of a bearer credential.
	lookup func(ctx context.Context, bearer string) (session, error)
}

// errNoSession is a bearer credential that names no session.
var errNoSession = errors.New("no such session")

// serveContender runs the floor or the table, plus a side server on -admin
// that answers the process's allocation counters (and, for the floor,
// takes its users).
func serveContender(ctx context.Context, o *options, getenv func(string) string) error {
	sec := getenv(envSecret)
	if o.AppID == "" || sec == "" || o.Addr == "" || o.Admin == "" || o.Upstream == "" {
		return errors.New("contender: -appid, -addr, -admin, -upstream and " + envSecret + " are required")
	}
	c := &contender{
		appID: o.AppID, secret: sec, upstream: strings.TrimRight(o.Upstream, "/"), client: newUpstreamClient(),
	}
	admin := http.NewServeMux()
	admin.HandleFunc("GET /metrics", serveAllocs)
	switch o.Role {
	case roleFloor:
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		users := &userMap{m: map[string]session{}}
		c.issue = func(_ context.Context, s session) (string, error) { return signES256(key, c.appID, s.OpenID) }
		c.lookup = users.lookup
		admin.HandleFunc("POST /users", users.register)
	case roleTable:
		if o.Redis == "" {
			return errors.New("table: -redis is required")
		}
		rdb := redis.NewClient(&redis.Options{Addr: o.Redis, PoolSize: 256, MinIdleConns: 8})
		defer rdb.Close()
		if err := rdb.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("table: redis: %w", err)
		}
		c.issue = func(ctx context.Context, s session) (string, error) { return storeSession(ctx, rdb, s) }
		c.lookup = func(ctx context.Context, id string) (session, error) { return loadSession(ctx, rdb, id) }
	}
	go func() { _ = serveUntil(ctx, o.Admin, admin) }()

	return serveUntil(ctx, o.Addr, c.routes())
}

// newUpstreamClient is the floor's and the table's WeChat client. It keeps
// connections alive, as any server calling WeChat at volume would: they pay
// for the call, not for a handshake per login.
func newUpstreamClient() *http.Client {
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second},
	}
}

// routes are wxtoken's paths for the routes the contender has.
func (c *contender) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, map[string]string{"status": "ok"}) })
	mux.HandleFunc("POST /v1/login", c.login)
	mux.HandleFunc("POST /v1/decrypt", c.decrypt)
	mux.HandleFunc("POST /v1/userinfo", c.userinfo)
	return mux
}

// login: decode the body, one jscode2session call, then issue (sign or
// store) and answer.
func (c *contender) login(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Code string `json:"code"`
	}
	if !decodeBody(w, r, &req) || req.Code == "" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	s, err := c.code2Session(r.Context(), req.Code)
	if err != nil {
		http.Error(w, "upstream", http.StatusBadGateway)
		return
	}
	tok, err := c.issue(r.Context(), s)
	if err != nil {
		http.Error(w, "issue", http.StatusInternalServerError)
		return
	}
	writeJSON(w, map[string]any{"access_token": tok, "token_type": "Bearer", "openid": s.OpenID})
}

// code2Session is the one WeChat call of a login.
func (c *contender) code2Session(ctx context.Context, code string) (session, error) {
	q := url.Values{"appid": {c.appID}, "secret": {c.secret}, "js_code": {code}, "grant_type": {"authorization_code"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.upstream+"/sns/jscode2session?"+q.Encode(), nil)
	if err != nil {
		return session{}, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return session{}, err
	}
	defer resp.Body.Close()
	var ans struct {
		session
		ErrCode int `json:"errcode"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&ans); err != nil {
		return session{}, fmt.Errorf("jscode2session: %w", err)
	}
	if ans.ErrCode != 0 || ans.OpenID == "" {
		return session{}, fmt.Errorf("jscode2session: errcode %d", ans.ErrCode)
	}
	return ans.session, nil
}

// decrypt: find the session, decrypt the user data, answer it.
func (c *contender) decrypt(w http.ResponseWriter, r *http.Request) {
	s, ok := c.bearer(w, r)
	if !ok {
		return
	}
	var req struct {
		EncryptedData string `json:"encryptedData"`
		IV            string `json:"iv"`
	}
	if !decodeBody(w, r, &req) {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	data, err := wechat.DecryptUserData(secret.String(s.SessionKey), wechat.Owner{AppID: c.appID, OpenID: s.OpenID}, req.EncryptedData, req.IV)
	if err != nil {
		http.Error(w, "decrypt", http.StatusBadRequest)
		return
	}
	writeJSON(w, map[string]json.RawMessage{"data": data})
}

// userinfo: find the session, check rawData's signature, decrypt, answer.
func (c *contender) userinfo(w http.ResponseWriter, r *http.Request) {
	s, ok := c.bearer(w, r)
	if !ok {
		return
	}
	var req struct {
		RawData       string `json:"rawData"`
		Signature     string `json:"signature"`
		EncryptedData string `json:"encryptedData"`
		IV            string `json:"iv"`
	}
	if !decodeBody(w, r, &req) {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	sk := secret.String(s.SessionKey)
	if !wechat.VerifyRawData(sk, req.RawData, req.Signature) || !json.Valid([]byte(req.RawData)) {
		http.Error(w, "signature", http.StatusBadRequest)
		return
	}
	data, err := wechat.DecryptUserData(sk, wechat.Owner{AppID: c.appID, OpenID: s.OpenID}, req.EncryptedData, req.IV)
	if err != nil {
		http.Error(w, "decrypt", http.StatusBadRequest)
		return
	}
	writeJSON(w, map[string]json.RawMessage{"profile": json.RawMessage(req.RawData), "data": data})
}

// bearer finds the session named by the Authorization header, or answers 401.
func (c *contender) bearer(w http.ResponseWriter, r *http.Request) (session, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return session{}, false
	}
	s, err := c.lookup(r.Context(), tok)
	if err != nil {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return session{}, false
	}
	return s, true
}

// decodeBody reads a JSON body of at most 64 KiB.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	return json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(v) == nil
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// signES256 is the floor's one signature: a compact JWS over claims of the
// size wxtoken signs, with a raw ECDSA P-256 key.
func signES256(key *ecdsa.PrivateKey, appID, openID string) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	now := time.Now().Unix()
	claims, err := json.Marshal(map[string]any{
		"iss": "http://127.0.0.1", "sub": openID, "aud": appID, "iat": now, "nbf": now,
		"exp": now + int64(sessionTTL.Seconds()), "jti": hex.EncodeToString(jti[:]),
	})
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(`{"alg":"ES256","typ":"JWT"}`)) + "." + enc.EncodeToString(claims)
	digest := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + enc.EncodeToString(sig), nil
}

// storeSession is the table's login: the session under a random
// 3rd_session id, with a TTL.
func storeSession(ctx context.Context, rdb *redis.Client, s session) (string, error) {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", err
	}
	val, err := json.Marshal(s)
	if err != nil {
		return "", err
	}
	key := hex.EncodeToString(id[:])
	if err := rdb.Set(ctx, "sess:"+key, val, sessionTTL).Err(); err != nil {
		return "", fmt.Errorf("redis set: %w", err)
	}
	return key, nil
}

// loadSession is the table's lookup on every bearer call.
func loadSession(ctx context.Context, rdb *redis.Client, id string) (session, error) {
	val, err := rdb.Get(ctx, "sess:"+id).Bytes()
	if errors.Is(err, redis.Nil) {
		return session{}, errNoSession
	}
	if err != nil {
		return session{}, fmt.Errorf("redis get: %w", err)
	}
	var s session
	if err := json.Unmarshal(val, &s); err != nil {
		return session{}, fmt.Errorf("session: %w", err)
	}
	return s, nil
}

// userMap holds the floor's users, written once before the load.
type userMap struct {
	mu sync.RWMutex
	m  map[string]session
}

func (u *userMap) lookup(_ context.Context, id string) (session, error) {
	u.mu.RLock()
	s, ok := u.m[id]
	u.mu.RUnlock()
	if !ok {
		return session{}, errNoSession
	}
	return s, nil
}

func (u *userMap) register(w http.ResponseWriter, r *http.Request) {
	var users []registeredUser
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<20)).Decode(&users); err != nil {
		http.Error(w, "bad users", http.StatusBadRequest)
		return
	}
	u.mu.Lock()
	for _, x := range users {
		u.m[x.ID] = x.session
	}
	u.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// allocCounters are the process's cumulative heap allocations. Objects
// counts tiny allocations too, as testing's allocs/op does.
type allocCounters struct {
	Objects uint64 `json:"objects"`
	Bytes   uint64 `json:"bytes"`
}

// serveAllocs answers allocCounters from runtime/metrics, which does not
// stop the world; the orchestrator reads it before and after a run.
func serveAllocs(w http.ResponseWriter, _ *http.Request) {
	s := []metrics.Sample{
		{Name: "/gc/heap/allocs:objects"},
		{Name: "/gc/heap/tiny/allocs:objects"},
		{Name: "/gc/heap/allocs:bytes"},
	}
	metrics.Read(s)
	writeJSON(w, allocCounters{Objects: s[0].Value.Uint64() + s[1].Value.Uint64(), Bytes: s[2].Value.Uint64()})
}
