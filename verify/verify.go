// Package verify is what a downstream service imports to accept wxtoken
// access tokens offline. Given the issuer and the appids it serves, it
// discovers the JWKS from the issuer's metadata, keeps it cached as the
// issuer's Cache-Control and ETag say, refetches (rate-limited, collapsed)
// when a token names an unknown kid, backs off while the issuer fails
// (serving the stale set meanwhile), refuses malformed tokens before any
// key lookup, pins the algorithms to those of the published keys, and
// checks iss, aud, typ (at+jwt), exp, nbf and iat with a leeway. Handlers
// receive typed Claims.
//
// Key parsing and the key lookup are MicahParks/jwkset and keyfunc; token
// parsing and claim checks are golang-jwt v5. This package adds what they
// leave to the caller: discovery, HTTP caching, and wxtoken's own rules.
package verify

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

// TokenType is the typ header of wxtoken's access tokens (RFC 9068).
const TokenType = "at+jwt"

// Defaults, each overridable in Config.
const (
	DefaultLeeway             = 30 * time.Second
	DefaultMaxAge             = 5 * time.Minute
	DefaultMaxMaxAge          = time.Hour
	DefaultMinRefresh         = 5 * time.Second
	DefaultUnknownKIDInterval = 10 * time.Second
	DefaultStaleIfError       = 10 * time.Minute
	DefaultMaxBackoff         = time.Minute
	DefaultHTTPTimeout        = 10 * time.Second
	// MaxTokenBytes bounds what Verify parses; wxtoken's tokens are far smaller.
	MaxTokenBytes = 4096
	// maxDocumentBytes bounds a discovery document or JWKS read.
	maxDocumentBytes = 1 << 20
)

// wxtokenAlgorithms are the algorithms wxtoken can sign with. Only these
// asymmetric algorithms are ever accepted, whatever the issuer publishes.
func wxtokenAlgorithms() []string { return []string{"ES256", "EdDSA", "RS256"} }

// Sentinel errors; every refused token wraps ErrInvalidToken, so callers
// branch with errors.Is. The wrapped detail is for logs only.
var (
	// ErrNoToken: the request carries no bearer token.
	ErrNoToken = errors.New("verify: no bearer token")
	// ErrMalformedRequest: the Authorization header is not one Bearer token.
	ErrMalformedRequest = errors.New("verify: malformed authorization header")
	// ErrInvalidToken: the token is refused.
	ErrInvalidToken = errors.New("verify: invalid token")
	// ErrExpired is wrapped together with ErrInvalidToken when the token is
	// only too old: the client should log in again.
	ErrExpired = errors.New("verify: token expired")
	// ErrKeysUnavailable: the keys could not be fetched and the cached ones
	// are too stale to use; the token was not judged.
	ErrKeysUnavailable = errors.New("verify: keys unavailable")
)

// Config is what New needs. Issuer and AppIDs are required.
type Config struct {
	// Issuer is wxtoken's WXTOKEN_ISSUER, exactly; discovery is fetched from
	// Issuer + "/.well-known/openid-configuration" and must name the same.
	Issuer string
	// AppIDs are the audiences this service accepts (the mini programs it serves).
	AppIDs []string
	// Client makes every HTTP request. Default: a client with HTTPTimeout.
	// For an https Issuer, a copy of it is used that refuses redirects off
	// https.
	Client *http.Client
	// HTTPTimeout bounds each fetch. Default 10 s.
	HTTPTimeout time.Duration
	// Leeway tolerates clock skew on exp, nbf and iat. Default 30 s.
	Leeway time.Duration
	// Algorithms limits what is accepted on top of the published keys' own
	// algorithms. Default ES256, EdDSA, RS256.
	Algorithms []string
	// DefaultMaxAge is how long a JWKS is used when its answer has no
	// Cache-Control max-age. Default 5 min.
	DefaultMaxAge time.Duration
	// MaxMaxAge caps the issuer's max-age: it bounds how long a key the
	// issuer dropped (emergency rotation) is still accepted here. Default 1 h.
	MaxMaxAge time.Duration
	// MinRefresh is the least time between two fetches made because the
	// cache expired (max-age=0 does not mean a fetch per request), and the
	// first wait after a failed fetch. Default 5 s.
	MinRefresh time.Duration
	// UnknownKIDInterval rate-limits refetches caused by unknown kids, so
	// forged kids cannot make this service hammer the issuer. Default 10 s.
	UnknownKIDInterval time.Duration
	// MaxBackoff caps the wait between fetches while the issuer fails: the
	// wait starts at MinRefresh and doubles per failure up to this, so the
	// keys refresh at most this long after the issuer is back. Default 1 min.
	MaxBackoff time.Duration
	// StaleIfError is how long past its max-age a cached JWKS is still used
	// while the issuer cannot be reached. Default 10 min; negative: never.
	StaleIfError time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Claims is what a verified token says.
type Claims struct {
	// OpenID is the user's openid in the mini program (sub).
	OpenID string
	// UnionID is the user's unionid, when WeChat gave one.
	UnionID string
	// AppID is the mini program the token was issued for (aud and client_id).
	AppID string
	// ID is the token's jti: key any memory of a token (deny-list, replay
	// check) on it, never on the token string.
	ID        string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Verifier verifies wxtoken access tokens. It is safe for concurrent use.
type Verifier struct {
	cfg    Config
	keys   *remoteKeys
	kf     keyfunc.Keyfunc
	allow  []string
	parser func(algs []string) *jwt.Parser
}

// wireClaims is a token's payload as wxtoken writes it.
type wireClaims struct {
	jwt.RegisteredClaims
	ClientID string `json:"client_id"`
	UnionID  string `json:"unionid,omitempty"`
}

// New discovers the issuer's JWKS and fetches it once, so a misconfigured
// issuer fails at start, not at the first request.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	jwksURL, err := discover(ctx, cfg)
	if err != nil {
		return nil, err
	}
	keys := newRemoteKeys(jwksURL, cfg)
	if err := keys.refresh(ctx); err != nil {
		return nil, err
	}
	kf, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: keys, UseWhitelist: nil})
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	v := &Verifier{cfg: cfg, keys: keys, kf: kf, allow: cfg.Algorithms}
	v.parser = func(algs []string) *jwt.Parser {
		return jwt.NewParser(
			jwt.WithValidMethods(algs),
			jwt.WithIssuer(cfg.Issuer),
			jwt.WithAudience(cfg.AppIDs...),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(cfg.Leeway),
			jwt.WithTimeFunc(cfg.Now),
			jwt.WithStrictDecoding(),
		)
	}
	return v, nil
}

func (c *Config) defaults() error {
	if c.Issuer == "" {
		return errors.New("verify: issuer is required")
	}
	if len(c.AppIDs) == 0 || slices.Contains(c.AppIDs, "") {
		return errors.New("verify: at least one appid is required, and none empty")
	}
	if c.HTTPTimeout <= 0 {
		c.HTTPTimeout = DefaultHTTPTimeout
	}
	if c.Client == nil {
		c.Client = &http.Client{Timeout: c.HTTPTimeout}
	}
	c.Client = guardRedirects(c.Client, c.Issuer)
	if c.Leeway == 0 {
		c.Leeway = DefaultLeeway
	}
	if c.Leeway < 0 {
		return errors.New("verify: leeway must not be negative")
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = wxtokenAlgorithms()
	}
	c.Algorithms = slices.Clone(c.Algorithms)
	for _, a := range c.Algorithms {
		if !slices.Contains(wxtokenAlgorithms(), a) {
			return fmt.Errorf("verify: algorithm %q is not one wxtoken signs with", a)
		}
	}
	if c.DefaultMaxAge <= 0 {
		c.DefaultMaxAge = DefaultMaxAge
	}
	if c.MaxMaxAge <= 0 {
		c.MaxMaxAge = DefaultMaxMaxAge
	}
	if c.MinRefresh <= 0 {
		c.MinRefresh = DefaultMinRefresh
	}
	if c.UnknownKIDInterval <= 0 {
		c.UnknownKIDInterval = DefaultUnknownKIDInterval
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.StaleIfError == 0 {
		c.StaleIfError = DefaultStaleIfError
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Verify checks raw and returns its claims. A refused token's error wraps
// ErrInvalidToken (and ErrExpired when it is only too old); ErrKeysUnavailable
// means the keys could not be had, not that the token is bad.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	if len(raw) > MaxTokenBytes {
		return nil, fmt.Errorf("%w: %d bytes, over the %d limit", ErrInvalidToken, len(raw), MaxTokenBytes)
	}
	// Malformed tokens are refused before the keys are touched, so garbage
	// never makes this service fetch from the issuer.
	alg, err := v.precheck(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	algs, err := v.keys.algorithms(ctx)
	if err != nil {
		return nil, err
	}
	pinned := slices.DeleteFunc(algs, func(a string) bool { return !slices.Contains(v.allow, a) })
	if len(pinned) == 0 {
		return nil, fmt.Errorf("%w: the issuer publishes no key of an accepted algorithm", ErrKeysUnavailable)
	}
	if !slices.Contains(pinned, alg) {
		return nil, fmt.Errorf("%w: alg is not one of the published keys'", ErrInvalidToken)
	}
	var c wireClaims
	_, err = v.parser(pinned).ParseWithClaims(raw, &c, v.keyfunc(ctx))
	if err != nil {
		if errors.Is(err, ErrKeysUnavailable) {
			return nil, err
		}
		if errors.Is(err, jwt.ErrTokenExpired) {
			return nil, fmt.Errorf("%w: %w: %w", ErrInvalidToken, ErrExpired, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if c.Subject == "" || c.ID == "" || c.IssuedAt == nil {
		return nil, fmt.Errorf("%w: sub, jti and iat are required", ErrInvalidToken)
	}
	if len(c.Audience) != 1 || c.ClientID != c.Audience[0] {
		return nil, fmt.Errorf("%w: exactly one audience, equal to client_id, is required", ErrInvalidToken)
	}
	return &Claims{
		OpenID:    c.Subject,
		UnionID:   c.UnionID,
		AppID:     c.Audience[0],
		ID:        c.ID,
		IssuedAt:  c.IssuedAt.Time,
		ExpiresAt: c.ExpiresAt.Time,
	}, nil
}

// precheck reads what it can of raw without keys: three base64url parts, a
// JSON object header that passes checkHeader with an accepted alg, and a
// JSON payload. It returns the header's alg.
func (v *Verifier) precheck(raw string) (string, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", errors.New("not three dot-separated parts")
	}
	var seg [3][]byte
	for i, p := range parts {
		b, err := base64.RawURLEncoding.Strict().DecodeString(p)
		if err != nil || len(b) == 0 {
			return "", fmt.Errorf("part %d is not non-empty base64url", i+1)
		}
		seg[i] = b
	}
	var header map[string]any
	if err := json.Unmarshal(seg[0], &header); err != nil || header == nil {
		return "", errors.New("header is not a JSON object")
	}
	if err := checkHeader(header); err != nil {
		return "", err
	}
	alg, _ := header["alg"].(string)
	if !slices.Contains(v.allow, alg) {
		return "", errors.New("alg is not accepted")
	}
	if !json.Valid(seg[1]) {
		return "", errors.New("payload is not JSON")
	}
	return alg, nil
}

// checkHeader: typ must be at+jwt, a kid is required (no trying every key),
// and headers that point elsewhere for keys are refused, never followed.
func checkHeader(h map[string]any) error {
	for _, name := range []string{"jku", "x5u", "jwk", "x5c", "crit"} {
		if _, ok := h[name]; ok {
			return fmt.Errorf("header %q is not accepted", name)
		}
	}
	typ, _ := h["typ"].(string)
	if !strings.EqualFold(typ, TokenType) && !strings.EqualFold(typ, "application/"+TokenType) {
		return errors.New("typ is not at+jwt")
	}
	if kid, _ := h["kid"].(string); kid == "" || len(kid) > 128 {
		return errors.New("missing or over-long kid")
	}
	return nil
}

// keyfunc checks the header again (it is the one golang-jwt parsed) before
// the key lookup.
func (v *Verifier) keyfunc(ctx context.Context) jwt.Keyfunc {
	lookup := v.kf.KeyfuncCtx(ctx)
	return func(t *jwt.Token) (any, error) {
		if err := checkHeader(t.Header); err != nil {
			return nil, err
		}
		return lookup(t)
	}
}
