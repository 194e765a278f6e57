package token

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
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

// ErrInvalid is returned, wrapped, for every token that must be refused. The
// wrapped message says why, for logs; callers answer with nothing more than
// "invalid token" so a forger learns nothing.
var ErrInvalid = errors.New("token: invalid")

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
	Accept func(appid string) bool
	Keys   KeySource
	Now    func() time.Time
}

// Service issues and verifies tokens. It holds no per-user state: everything
// a later call needs travels inside the token.
type Service struct {
	cfg Config
}

// claims is the wire form of a token's payload.
type claims struct {
	jwt.RegisteredClaims
	ClientID   string `json:"client_id"`
	UnionID    string `json:"unionid,omitempty"`
	RiskRank   *int   `json:"risk_rank,omitempty"`
	SessionKey string `json:"wxsk"`
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
	if cfg.Leeway < 0 {
		return nil, errors.New("token: leeway must not be negative")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg}, nil
}

// TTL is how long issued tokens live.
func (s *Service) TTL() time.Duration { return s.cfg.TTL }

// Issue signs a token for id with the active signing key and seals the
// session_key with the active encryption key.
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
	t := jwt.NewWithClaims(method, c)
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
func (s *Service) Verify(_ context.Context, raw string) (*Session, error) {
	if len(raw) > MaxTokenBytes {
		return nil, invalid("token is %d bytes, over the %d limit", len(raw), MaxTokenBytes)
	}
	if i := strings.IndexByte(raw, '.'); i < 0 || i > maxHeaderBytes {
		return nil, invalid("header missing or over %d bytes", maxHeaderBytes)
	}
	ring := s.cfg.Keys.Current()
	if ring == nil {
		return nil, errors.New("token: verify: no keys loaded")
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(ring.Algorithms()),
		jwt.WithIssuer(s.cfg.Issuer),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(s.cfg.Leeway),
		jwt.WithTimeFunc(s.cfg.Now),
		jwt.WithStrictDecoding(),
	}
	if s.cfg.Accept == nil {
		opts = append(opts, jwt.WithAudience(s.cfg.Audiences...))
	}
	parser := jwt.NewParser(opts...)
	var c claims
	_, err := parser.ParseWithClaims(raw, &c, func(t *jwt.Token) (any, error) {
		return verificationKey(ring, t)
	})
	if err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return nil, fmt.Errorf("%w: %w: %w", ErrInvalid, ErrExpired, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if c.Subject == "" || c.ID == "" || c.IssuedAt == nil {
		return nil, invalid("sub, jti and iat are required")
	}
	if len(c.Audience) != 1 || c.ClientID != c.Audience[0] {
		return nil, invalid("exactly one audience, equal to client_id, is required")
	}
	appID := c.Audience[0]
	if s.cfg.Accept != nil && !s.cfg.Accept(appID) {
		return nil, invalid("audience is not an app served here")
	}
	if c.RiskRank != nil && (*c.RiskRank < 0 || *c.RiskRank > 4) {
		return nil, invalid("risk_rank out of range")
	}
	sk, err := s.openSessionKey(ring, c.SessionKey, appID, c.Subject, c.ID)
	if err != nil {
		return nil, err
	}
	return &Session{
		Identity: Identity{
			AppID:      appID,
			OpenID:     c.Subject,
			UnionID:    c.UnionID,
			SessionKey: sk,
			RiskRank:   c.RiskRank,
		},
		ID:        c.ID,
		IssuedAt:  c.IssuedAt.Time,
		ExpiresAt: c.ExpiresAt.Time,
	}, nil
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
		return nil, errors.New("unknown kid")
	}
	if t.Method == nil || t.Method.Alg() != key.Alg {
		return nil, errors.New("alg does not match the key")
	}
	return key.Public, nil
}

func (s *Service) openSessionKey(ring *keys.Ring, claim, appID, sub, jti string) (secret.String, error) {
	version, rest, ok := strings.Cut(claim, ".")
	if !ok || version != sealVersion {
		return "", invalid("session key claim: unknown format")
	}
	kid, body, ok := strings.Cut(rest, ".")
	if !ok || kid == "" || len(kid) > maxKIDBytes {
		return "", invalid("session key claim: malformed")
	}
	key, ok := ring.DecryptionKey(kid)
	if !ok {
		return "", invalid("session key claim: unknown encryption key")
	}
	sealed, err := base64.RawURLEncoding.Strict().DecodeString(body)
	if err != nil {
		return "", invalid("session key claim: not base64url")
	}
	plain, err := key.Open(sealed, additionalData(kid, s.cfg.Issuer, appID, sub, jti))
	if err != nil {
		return "", invalid("session key claim: does not open for this token")
	}
	return secret.String(plain), nil
}

// additionalData binds a sealed session_key to the one token it was made
// for: moving it into another token (another user, app, issuer or jti)
// makes it fail to open. Fields are length-prefixed so no two different
// tuples encode the same.
func additionalData(fields ...string) []byte {
	b := []byte("wxtoken/session-key/" + sealVersion)
	for _, f := range fields {
		b = fmt.Appendf(b, "|%d:%s", len(f), f)
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
