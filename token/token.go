package token

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wxtoken/wxtoken/keys"
	"github.com/wxtoken/wxtoken/secret"
)

// Type is the JWT "typ" header of every token: RFC 9068 access tokens, so a
// token of another kind (an ID token, a token from another issuer that shares
// the key) can never be mistaken for one of ours.
const Type = "at+jwt"

// SessionKeyClaim names the private claim that carries the sealed
// session_key. It is documented so downstream services know to ignore it.
const SessionKeyClaim = "wxsk"

// sealVersion prefixes the sealed claim so its format can change later.
const sealVersion = "v1"

// Limits on what Verify is willing to parse: a token is a few hundred bytes,
// so anything far larger is hostile and is refused before any decoding.
const (
	MaxTokenBytes  = 4096
	maxHeaderBytes = 512
	maxKIDBytes    = 128
)

// DefaultLeeway tolerates clock skew between replicas and downstream services.
const DefaultLeeway = 30 * time.Second

// MaxLifetime is the longest TTL the service accepts, and so the longest
// exp - iat that Verify accepts: a token claiming to live longer was not
// issued by this service as configured, whoever signed it, so a leaked
// signing key cannot mint century-long tokens.
const MaxLifetime = 24 * time.Hour

// ErrInvalid is returned, wrapped, for every token that must be refused. The
// wrapped message says why, for logs; callers answer with nothing more than
// "invalid token" so a forger learns nothing.
var ErrInvalid = errors.New("token: invalid")

// ErrLoginTooOld is Issue's answer for an Identity whose AuthTime is more
// than MaxLifetime (plus the leeway) ago: a token renewed from another (a session reset) may
// not outlive its user's login by more than that, so a stolen token cannot
// be renewed forever; only a new wx.login() gives a new one.
var ErrLoginTooOld = errors.New("token: the login is too old to renew")

// AuthTimeClaim names the claim that carries the time of the user's
// wx.login()-based login, as OIDC's auth_time does: set at login, carried
// unchanged into every token renewed from it.
const AuthTimeClaim = "auth_time"

// ErrExpired is returned, wrapped together with ErrInvalid, when the only
// problem is age: the client should simply log in again.
var ErrExpired = errors.New("token: expired")

// KeySource hands out the live key ring. keys.Store implements it; the ring
// may change between two calls (rotation), so callers fetch it once per use.
type KeySource interface {
	Current() *keys.Ring
}

// Identity is who a token speaks for: a WeChat user of one mini program,
// with the session_key WeChat gave at login.
type Identity struct {
	AppID      string
	OpenID     string
	UnionID    string
	SessionKey secret.String
	// RiskRank is WeChat's risk rank of the user at login (0 to 4), in the
	// risk_rank claim, when the app asks for it; nil leaves the claim out.
	RiskRank *int
	// TTL is this token's lifetime when its app has one of its own; 0
	// means the service's TTL, which is also the longest allowed (key
	// retention is computed from it).
	TTL time.Duration
	// AuthTime is when the user logged in with a wx.login() code (the
	// auth_time claim). Zero, at a login, means now; a renewal passes the
	// verified token's own, so renewals never move it forward.
	AuthTime time.Time
}

// Issued is a freshly signed token and what a login answer tells about it.
type Issued struct {
	Token     string
	ID        string
	ExpiresAt time.Time
	ExpiresIn time.Duration
}

// Session is a verified token: the identity it carries, with the session_key
// decrypted in memory for this request only.
type Session struct {
	Identity
	ID        string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Config is what a Service needs. Audiences lists the appids whose tokens are
// accepted; a token for any other audience is refused.
type Config struct {
	Issuer    string
	TTL       time.Duration
	Leeway    time.Duration
	Audiences []string
	// Accept, when set, replaces Audiences: it reports whether tokens for
	// an appid are accepted, for a service whose apps change while it runs.
	// It is asked on every Verify, cached tokens included.
	Accept func(appid string) bool
	Keys   KeySource
	Now    func() time.Time
	// CacheEntries bounds the cache of verified tokens (see Verify); 0 turns
	// the cache off, so every Verify checks the signature and opens wxsk.
	CacheEntries int
	// Observe is told the outcome of every Verify, for metrics; nil: nothing.
	Observe func(Outcome)
}

// Service issues and verifies tokens. It holds no per-user state: everything
// a later call needs travels inside the token (the optional cache only
// remembers what verifying a token already proved).
type Service struct {
	cfg Config
	// validator checks the time and audience claims; the same one runs on
	// a fresh verification and on a cache hit, so both refuse alike.
	validator *jwt.Validator
	cache     *cache
}

// claims is the wire form of a token's payload.
type claims struct {
	jwt.RegisteredClaims
	ClientID   string `json:"client_id"`
	UnionID    string `json:"unionid,omitempty"`
	RiskRank   *int   `json:"risk_rank,omitempty"`
	SessionKey string `json:"wxsk"`
	// AuthTime is optional on the wire: tokens issued before it existed
	// lack it and are read as auth_time = iat.
	AuthTime *jwt.NumericDate `json:"auth_time,omitempty"`
}

// UnmarshalJSON refuses exp, iat, nbf and auth_time unless they are JSON numbers, as
// RFC 7519 defines a NumericDate: jwt.NumericDate also takes a quoted
// number ("1700000000"), which no issuer of ours writes, and a verifier
// that is lenient where others are strict invites confusion between them.
func (c *claims) UnmarshalJSON(b []byte) error {
	var dates struct {
		Exp  json.RawMessage `json:"exp"`
		Iat  json.RawMessage `json:"iat"`
		Nbf  json.RawMessage `json:"nbf"`
		Auth json.RawMessage `json:"auth_time"`
	}
	if err := json.Unmarshal(b, &dates); err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		raw  json.RawMessage
	}{{"exp", dates.Exp}, {"iat", dates.Iat}, {"nbf", dates.Nbf}, {"auth_time", dates.Auth}} {
		if d.raw != nil && !isJSONNumber(d.raw) {
			return fmt.Errorf("claim %s is not a JSON number", d.name)
		}
	}
	type plain claims // the same fields without this method, so no recursion
	return json.Unmarshal(b, (*plain)(c))
}

// isJSONNumber tells a JSON number from the other values a json.RawMessage
// may hold (string, null, object, array, true, false) by its first byte;
// the full decode after it checks the rest.
func isJSONNumber(raw json.RawMessage) bool {
	return len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9')
}

// issuedClaims is what Issue writes: a token has exactly one audience, and
// it goes out as a JSON string, not a one-element array (RFC 7519 allows
// both; simple gateways such as HAProxy's jwt_payload_query match only a
// string). The shallower Audience field hides the embedded one when
// marshalled, so jwt.MarshalSingleStringAsArray, a package-level setting,
// is left alone. Verify reads either form.
type issuedClaims struct {
	claims
	Audience string `json:"aud"`
}

// New checks the configuration and builds a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("token: issuer is required")
	}
	if cfg.TTL <= 0 {
		return nil, errors.New("token: TTL must be positive")
	}
	if cfg.Keys == nil {
		return nil, errors.New("token: key source is required")
	}
	if len(cfg.Audiences) == 0 && cfg.Accept == nil {
		return nil, errors.New("token: at least one audience (appid) is required")
	}
	if cfg.TTL > MaxLifetime {
		return nil, fmt.Errorf("token: TTL must be at most %v", MaxLifetime)
	}
	if cfg.Leeway < 0 {
		return nil, errors.New("token: leeway must not be negative")
	}
	if cfg.CacheEntries < 0 {
		return nil, errors.New("token: cache entries must not be negative")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	checks := []jwt.ParserOption{
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(cfg.Now),
	}
	if cfg.Accept == nil {
		checks = append(checks, jwt.WithAudience(cfg.Audiences...))
	}
	s := &Service{cfg: cfg, validator: jwt.NewValidator(checks...)}
	if cfg.CacheEntries > 0 {
		s.cache = newCache(cfg.CacheEntries)
	}
	return s, nil
}

// TTL is how long issued tokens live.
func (s *Service) TTL() time.Duration { return s.cfg.TTL }

// Issue signs a token for id with the active signing key and seals the
// session_key with the active encryption key. A renewal (id.AuthTime set)
// whose login is more than MaxLifetime ago is refused with ErrLoginTooOld.
func (s *Service) Issue(_ context.Context, id Identity) (Issued, error) {
	if id.AppID == "" || id.OpenID == "" || id.SessionKey.Empty() {
		return Issued{}, errors.New("token: issue: appid, openid and session_key are required")
	}
	ring := s.cfg.Keys.Current()
	if ring == nil {
		return Issued{}, errors.New("token: issue: no keys loaded")
	}
	jti, err := randomID()
	if err != nil {
		return Issued{}, fmt.Errorf("token: issue: %w", err)
	}
	ttl := s.cfg.TTL
	if id.TTL != 0 {
		if id.TTL < 0 || id.TTL > s.cfg.TTL {
			return Issued{}, fmt.Errorf("token: issue: TTL %s is not between 0 and the service's %s", id.TTL, s.cfg.TTL)
		}
		ttl = id.TTL
	}
	now := s.cfg.Now().Truncate(time.Second)
	exp := now.Add(ttl)
	authTime := now
	if !id.AuthTime.IsZero() {
		// The leeway covers a caller that checked the age itself before
		// work that must not be wasted (a reset at WeChat), and replicas'
		// clock skew.
		if age := now.Sub(id.AuthTime); age > MaxLifetime+s.cfg.Leeway {
			return Issued{}, fmt.Errorf("token: issue: login %v ago: %w", age.Truncate(time.Second), ErrLoginTooOld)
		}
		// Never after iat: another replica's clock may run a little
		// ahead, and an earlier auth_time only shortens the renewals.
		if at := id.AuthTime.Truncate(time.Second); at.Before(now) {
			authTime = at
		}
		// A renewal never outlives the login by more than MaxLifetime (and
		// the leeway): a stolen token renewed just before the limit expires
		// with it, instead of living a whole TTL beyond.
		if limit := authTime.Add(MaxLifetime + s.cfg.Leeway); exp.After(limit) {
			if !limit.After(now) {
				return Issued{}, fmt.Errorf("token: issue: login %v ago: %w", now.Sub(authTime), ErrLoginTooOld)
			}
			exp, ttl = limit, limit.Sub(now)
		}
	}
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.cfg.Issuer,
			Subject:   id.OpenID,
			Audience:  jwt.ClaimStrings{id.AppID},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        jti,
		},
		ClientID: id.AppID,
		UnionID:  id.UnionID,
		RiskRank: id.RiskRank,
		AuthTime: jwt.NewNumericDate(authTime),
	}
	enc := ring.EncryptionKey()
	sealed, err := enc.Seal([]byte(id.SessionKey.Reveal()), additionalData(enc.KID, s.cfg.Issuer, id.AppID, id.OpenID, jti))
	if err != nil {
		return Issued{}, fmt.Errorf("token: issue: seal session key: %w", err)
	}
	c.SessionKey = sealVersion + "." + enc.KID + "." + base64.RawURLEncoding.EncodeToString(sealed)

	sk := ring.SigningKey()
	method := jwt.GetSigningMethod(sk.Alg)
	if method == nil {
		return Issued{}, fmt.Errorf("token: issue: unsupported algorithm %q", sk.Alg)
	}
	t := jwt.NewWithClaims(method, issuedClaims{claims: c, Audience: id.AppID})
	t.Header["kid"] = sk.KID
	t.Header["typ"] = Type
	signingString, err := t.SigningString()
	if err != nil {
		return Issued{}, fmt.Errorf("token: issue: encode: %w", err)
	}
	sig, err := sk.Sign(signingString)
	if err != nil {
		return Issued{}, fmt.Errorf("token: issue: sign: %w", err)
	}
	return Issued{
		Token:     signingString + "." + base64.RawURLEncoding.EncodeToString(sig),
		ID:        jti,
		ExpiresAt: exp,
		ExpiresIn: ttl,
	}, nil
}

// Verify checks everything about raw that RFC 8725 asks of a verifier and
// opens the sealed session_key. Any failure wraps ErrInvalid (and ErrExpired
// when the token is merely too old).
//
// With a cache (Config.CacheEntries), a token verified before under the
// same key ring skips the signature check and the AES-GCM open; its time
// claims are checked again on every hit by the same validator, so a hit
// answers exactly what a fresh verification would. Failures are never
// cached.
func (s *Service) Verify(_ context.Context, raw string) (*Session, error) {
	sess, cached, err := s.verifyRaw(raw)
	if s.cfg.Observe != nil {
		s.cfg.Observe(outcomeOf(err, cached))
	}
	return sess, err
}

// Lookup answers raw's session when it is a token this service has
// verified and still holds in its cache, valid now under the current keys
// and for an app still served; ok is false otherwise, and the caller must
// Verify raw. It checks no signature, so it costs a hash and a lookup: the
// bearer middleware asks it first, and spends the client's budget of failed
// authentications only on tokens that need the costly check. A hit is
// reported to Observe like Verify's cached answers.
func (s *Service) Lookup(raw string) (sess *Session, ok bool) {
	if s.cache == nil || len(raw) > MaxTokenBytes {
		return nil, false
	}
	ring := s.cfg.Keys.Current()
	if ring == nil {
		return nil, false
	}
	v, ok := s.cache.get(cacheKey(raw), ring)
	if !ok {
		return nil, false
	}
	if _, err := s.recheck(v); err != nil {
		// Verify gives the reason, and drops an entry no longer valid.
		return nil, false
	}
	if s.cfg.Observe != nil {
		s.cfg.Observe(OutcomeCached)
	}
	return v.session(), true
}

// verifyRaw is Verify; cached says the answer came from the cache.
func (s *Service) verifyRaw(raw string) (sess *Session, cached bool, err error) {
	if len(raw) > MaxTokenBytes {
		return nil, false, invalidAs(errMalformed, "token is %d bytes, over the %d limit", len(raw), MaxTokenBytes)
	}
	if i := strings.IndexByte(raw, '.'); i < 0 || i > maxHeaderBytes {
		return nil, false, invalidAs(errMalformed, "header missing or over %d bytes", maxHeaderBytes)
	}
	ring := s.cfg.Keys.Current()
	if ring == nil {
		return nil, false, errors.New("token: verify: no keys loaded")
	}
	if s.cache == nil {
		v, err := s.verify(ring, raw)
		if err != nil {
			return nil, false, err
		}
		return v.session(), false, nil
	}
	key := cacheKey(raw)
	if v, ok := s.cache.get(key, ring); ok {
		if stale, err := s.recheck(v); err != nil {
			if stale {
				s.cache.drop(key)
			}
			return nil, true, err
		}
		return v.session(), true, nil
	}
	v, err := s.verify(ring, raw)
	if err != nil {
		return nil, false, err
	}
	s.cache.put(key, v, v.registered.ExpiresAt.Add(s.cfg.Leeway).Sub(s.cfg.Now()))
	return v.session(), false, nil
}

// recheck is what a cached verification must pass again on every use, by
// Lookup and Verify alike: the time claims and the issuer, then that its
// app is still served (the apps served can change while a token is
// cached). stale says the time claims failed, so the entry can never pass
// again and may be dropped.
func (s *Service) recheck(v *verified) (stale bool, err error) {
	if err := s.validate(&v.registered); err != nil {
		return true, err
	}
	if s.cfg.Accept != nil && !s.cfg.Accept(v.sess.AppID) {
		return false, invalidAs(errWrongAudience, "audience is not an app served here")
	}
	return false, nil
}

// verified is what verifying a token proved: the session it speaks for,
// the registered claims whose time checks must hold on every use, and the
// ring that proved it.
type verified struct {
	ring       *keys.Ring
	registered jwt.RegisteredClaims
	sess       Session
	// ttl is how long a cache may keep it: until exp plus the leeway.
	ttl time.Duration
}

// session is a copy of v's session, so no caller can change what the
// cache answers to the next one.
func (v *verified) session() *Session {
	sess := v.sess
	return &sess
}

// verify is the full check of raw against ring: header, signature, claims
// and the sealed session_key.
func (s *Service) verify(ring *keys.Ring, raw string) (*verified, error) {
	parser := jwt.NewParser(
		jwt.WithValidMethods(ring.Algorithms()),
		jwt.WithStrictDecoding(),
		// The claims are checked below by s.validator, the one a cache
		// hit uses too; the parser checks the signature first either way.
		jwt.WithoutClaimsValidation(),
	)
	var c claims
	_, err := parser.ParseWithClaims(raw, &c, func(t *jwt.Token) (any, error) {
		return verificationKey(ring, t)
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := s.validate(&c.RegisteredClaims); err != nil {
		return nil, err
	}
	if c.Subject == "" || c.ID == "" || c.IssuedAt == nil {
		return nil, invalid("sub, jti and iat are required")
	}
	if life := c.ExpiresAt.Sub(c.IssuedAt.Time); life > MaxLifetime {
		return nil, invalid("lifetime exp - iat of %v is over the %v limit", life, MaxLifetime)
	}
	if len(c.Audience) != 1 || c.ClientID != c.Audience[0] {
		return nil, invalid("exactly one audience, equal to client_id, is required")
	}
	appID := c.Audience[0]
	if s.cfg.Accept != nil && !s.cfg.Accept(appID) {
		return nil, invalidAs(errWrongAudience, "audience is not an app served here")
	}
	if c.RiskRank != nil && (*c.RiskRank < 0 || *c.RiskRank > 4) {
		return nil, invalid("risk_rank out of range")
	}
	authTime := c.IssuedAt.Time // tokens issued before auth_time existed
	if c.AuthTime != nil {
		authTime = c.AuthTime.Time
		if authTime.After(c.IssuedAt.Time) {
			return nil, invalid("auth_time is after iat")
		}
		if authTime.After(s.cfg.Now().Add(s.cfg.Leeway)) {
			return nil, invalid("auth_time is in the future")
		}
	}
	sk, err := s.openSessionKey(ring, c.SessionKey, appID, c.Subject, c.ID)
	if err != nil {
		return nil, err
	}
	return &verified{
		ring:       ring,
		registered: c.RegisteredClaims,
		sess: Session{
			Identity: Identity{
				AppID:      appID,
				OpenID:     c.Subject,
				UnionID:    c.UnionID,
				SessionKey: sk,
				RiskRank:   c.RiskRank,
				AuthTime:   authTime,
			},
			ID:        c.ID,
			IssuedAt:  c.IssuedAt.Time,
			ExpiresAt: c.ExpiresAt.Time,
		},
	}, nil
}

// validate checks the registered claims against the clock (exp, iat and nbf,
// with the leeway), the issuer and the audience. It wraps its refusal as
// the parser would (jwt.ErrTokenInvalidClaims), with ErrExpired for age.
func (s *Service) validate(rc *jwt.RegisteredClaims) error {
	err := s.validator.Validate(rc)
	if err == nil {
		return nil
	}
	if errors.Is(err, jwt.ErrTokenExpired) {
		return fmt.Errorf("%w: %w: %w: %w", ErrInvalid, ErrExpired, jwt.ErrTokenInvalidClaims, err)
	}
	return fmt.Errorf("%w: %w: %w", ErrInvalid, jwt.ErrTokenInvalidClaims, err)
}

// verificationKey pins the key to the header: the kid must name a key we
// publish, the header's alg must be that key's own, the typ must be ours, and
// headers that point elsewhere for keys are refused outright (never fetched).
func verificationKey(ring *keys.Ring, t *jwt.Token) (any, error) {
	for _, h := range []string{"jku", "x5u", "jwk", "x5c", "crit"} {
		if _, ok := t.Header[h]; ok {
			return nil, fmt.Errorf("header %q is not accepted", h)
		}
	}
	typ, _ := t.Header["typ"].(string)
	if !strings.EqualFold(typ, Type) && !strings.EqualFold(typ, "application/"+Type) {
		return nil, errors.New("wrong typ")
	}
	kid, _ := t.Header["kid"].(string)
	if kid == "" || len(kid) > maxKIDBytes {
		return nil, errors.New("missing or over-long kid")
	}
	key, ok := ring.VerificationKey(kid)
	if !ok {
		return nil, errUnknownKID
	}
	if t.Method == nil || t.Method.Alg() != key.Alg {
		return nil, errors.New("alg does not match the key")
	}
	return key.Public, nil
}

func (s *Service) openSessionKey(ring *keys.Ring, claim, appID, sub, jti string) (secret.String, error) {
	version, rest, ok := strings.Cut(claim, ".")
	if !ok || version != sealVersion {
		return "", invalidAs(errSealedKey, "session key claim: unknown format")
	}
	kid, body, ok := strings.Cut(rest, ".")
	if !ok || kid == "" || len(kid) > maxKIDBytes {
		return "", invalidAs(errSealedKey, "session key claim: malformed")
	}
	key, ok := ring.DecryptionKey(kid)
	if !ok {
		return "", invalidAs(errSealedKey, "session key claim: unknown encryption key")
	}
	sealed, err := base64.RawURLEncoding.Strict().DecodeString(body)
	if err != nil {
		return "", invalidAs(errSealedKey, "session key claim: not base64url")
	}
	plain, err := key.Open(sealed, additionalData(kid, s.cfg.Issuer, appID, sub, jti))
	if err != nil {
		return "", invalidAs(errSealedKey, "session key claim: does not open for this token")
	}
	return secret.String(plain), nil
}

// additionalData binds a sealed session_key to the one token it was made
// for: moving it into another token (another user, app, issuer or jti)
// makes it fail to open. Fields are length-prefixed so no two different
// tuples encode the same.
func additionalData(fields ...string) []byte {
	const prefix = "wxtoken/session-key/" + sealVersion
	size := len(prefix)
	for _, f := range fields {
		size += len(f) + 8
	}
	b := make([]byte, 0, size)
	b = append(b, prefix...)
	// "|<length>:<field>" for each field, by hand: fmt.Appendf's
	// formatting was a few µs of every login and every cold verification.
	for _, f := range fields {
		b = append(b, '|')
		b = strconv.AppendInt(b, int64(len(f)), 10)
		b = append(b, ':')
		b = append(b, f...)
	}
	return b
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

func randomID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
