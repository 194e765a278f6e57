package token_test

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/keys"
	"github.com/wxtoken/wxtoken/token"
)

const (
	issuer = "https://auth.example.test"
	appID  = "wx1111222233334444"
	openID = "oUser0000000000000000000001"
	skText = "tiihtNczf5v6AKRyjwEUhQ=="
)

type staticKeys struct{ ring *keys.Ring }

func (s staticKeys) Current() *keys.Ring { return s.ring }

// clock is a settable time source shared by the service and the test.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func mustDir(tb testing.TB, alg string) (*keys.Dir, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "keys")
	d := keys.NewDir(path, 3*time.Hour, nil)
	if _, err := d.Init(alg); err != nil {
		tb.Fatal(err)
	}
	return d, path
}

func mustService(tb testing.TB, ring *keys.Ring, clk *clock) *token.Service {
	tb.Helper()
	s, err := token.New(token.Config{Issuer: issuer, TTL: 2 * time.Hour, Leeway: 30 * time.Second,
		Audiences: []string{appID}, Keys: staticKeys{ring}, Now: clk.now})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func mustRing(tb testing.TB, d *keys.Dir) *keys.Ring {
	tb.Helper()
	r, err := d.Load()
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func TestIssueAndVerifyRoundTrip(t *testing.T) {
	for _, alg := range []string{"ES256", "EdDSA", "RS256"} {
		t.Run(alg, func(t *testing.T) {
			d, _ := mustDir(t, alg)
			clk := &clock{time.Unix(1_800_000_000, 0)}
			s := mustService(t, mustRing(t, d), clk)
			issued, err := s.Issue(context.Background(), token.Identity{AppID: appID, OpenID: openID, UnionID: "oUnion", SessionKey: skText})
			if err != nil {
				t.Fatal(err)
			}
			if issued.ExpiresIn != 2*time.Hour || !issued.ExpiresAt.Equal(clk.t.Add(2*time.Hour)) {
				t.Errorf("expiry %v %v", issued.ExpiresIn, issued.ExpiresAt)
			}
			sess, err := s.Verify(context.Background(), issued.Token)
			if err != nil {
				t.Fatal(err)
			}
			if sess.OpenID != openID || sess.AppID != appID || sess.UnionID != "oUnion" || sess.SessionKey.Reveal() != skText || sess.ID != issued.ID {
				t.Errorf("session %+v", sess)
			}
			if strings.Contains(issued.Token, skText) {
				t.Error("session key visible in token")
			}
		})
	}
}

// forge builds a token from raw header and claims, signed by the ring's
// active key (or not at all), to probe what Verify accepts.
type forge struct {
	header map[string]any
	claims map[string]any
}

func (f forge) sign(t testing.TB, ring *keys.Ring) string {
	t.Helper()
	hb, _ := json.Marshal(f.header)
	cb, _ := json.Marshal(f.claims)
	ss := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
	sig, err := ring.SigningKey().Sign(ss)
	if err != nil {
		t.Fatal(err)
	}
	return ss + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func decodePart(t testing.TB, part string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestVerifyRejects(t *testing.T) {
	d, _ := mustDir(t, "ES256")
	ring := mustRing(t, d)
	clk := &clock{time.Unix(1_800_000_000, 0)}
	var outcome token.Outcome
	s, err := token.New(token.Config{Issuer: issuer, TTL: 2 * time.Hour, Leeway: 30 * time.Second,
		Audiences: []string{appID}, Keys: staticKeys{ring}, Now: clk.now,
		Observe: func(o token.Outcome) { outcome = o }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	good, err := s.Issue(ctx, token.Identity{AppID: appID, OpenID: openID, SessionKey: skText})
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.Issue(ctx, token.Identity{AppID: appID, OpenID: "oSomeoneElse00000000000000", SessionKey: "AAAAAAAAAAAAAAAAAAAAAA=="})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good.Token, ".")
	header, claims := decodePart(t, parts[0]), decodePart(t, parts[1])
	otherClaims := decodePart(t, strings.Split(other.Token, ".")[1])

	// withH / withC return a forged variant re-signed with the real key: only
	// the named change can be why Verify refuses it.
	withH := func(k string, v any) string {
		h := copyMap(header)
		if v == nil {
			delete(h, k)
		} else {
			h[k] = v
		}
		return forge{h, claims}.sign(t, ring)
	}
	withC := func(k string, v any) string {
		c := copyMap(claims)
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return forge{header, c}.sign(t, ring)
	}
	now := clk.t.Unix()

	// alg none, and HMAC keyed with the public key from the JWKS (key confusion).
	noneTok := b64json(t, map[string]any{"alg": "none", "typ": "at+jwt", "kid": header["kid"]}) + "." + parts[1] + "."
	jwksBody, _ := ring.JWKS()
	hs := b64json(t, map[string]any{"alg": "HS256", "typ": "at+jwt", "kid": header["kid"]}) + "." + parts[1]
	mac := hmac.New(sha256.New, jwksBody)
	mac.Write([]byte(hs))
	hmacTok := hs + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	pemPub := publicPEM(t, ring, header["kid"].(string))
	mac = hmac.New(sha256.New, pemPub)
	mac.Write([]byte(hs))
	hmacPEMTok := hs + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))

	// A token signed by a key that is not ours (an attacker's Ed25519 key,
	// announced through an embedded jwk header).
	_, attacker, _ := ed25519.GenerateKey(nil)
	eh := b64json(t, map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": header["kid"],
		"jwk": map[string]any{"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(attacker.Public().(ed25519.PublicKey))}}) + "." + parts[1]
	foreignTok := eh + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(attacker, []byte(eh)))

	sk := claims["wxsk"].(string)
	flipped := []byte(sk)
	flipped[len(flipped)-3] ^= 0x02
	pieces := strings.Split(sk, ".")

	tests := []struct {
		name    string
		tok     string
		expired bool
		outcome token.Outcome
	}{
		{"alg none", noneTok, false, token.OutcomeBadSignature},
		{"hmac with jwks bytes", hmacTok, false, token.OutcomeBadSignature},
		{"hmac with public key pem", hmacPEMTok, false, token.OutcomeBadSignature},
		{"foreign key via jwk header", foreignTok, false, token.OutcomeBadSignature},
		{"jku header", withH("jku", "https://evil.example/jwks.json"), false, token.OutcomeBadHeader},
		{"x5u header", withH("x5u", "https://evil.example/cert.pem"), false, token.OutcomeBadHeader},
		{"x5c header", withH("x5c", []string{"MIIB"}), false, token.OutcomeBadHeader},
		{"crit header", withH("crit", []string{"exp"}), false, token.OutcomeBadHeader},
		{"unknown kid", withH("kid", "not-a-key"), false, token.OutcomeUnknownKID},
		{"path kid", withH("kid", "../../etc/passwd"), false, token.OutcomeUnknownKID},
		{"long kid", withH("kid", strings.Repeat("k", 5000)), false, token.OutcomeMalformed},
		{"missing kid", withH("kid", nil), false, token.OutcomeBadHeader},
		{"wrong typ", withH("typ", "JWT"), false, token.OutcomeBadHeader},
		{"missing typ", withH("typ", nil), false, token.OutcomeBadHeader},
		{"alg mismatch", withH("alg", "ES384"), false, token.OutcomeBadSignature},
		{"wrong iss", withC("iss", "https://evil.example"), false, token.OutcomeWrongIssuer},
		{"missing iss", withC("iss", nil), false, token.OutcomeBadClaims},
		{"wrong aud", withC("aud", []string{"wxsomeoneelse0000"}), false, token.OutcomeWrongAudience},
		{"missing aud", withC("aud", nil), false, token.OutcomeBadClaims},
		{"two audiences", withC("aud", []string{appID, "wxsomeoneelse0000"}), false, token.OutcomeBadClaims},
		{"client_id differs", withC("client_id", "wxsomeoneelse0000"), false, token.OutcomeBadClaims},
		{"missing exp", withC("exp", nil), false, token.OutcomeBadClaims},
		{"expired", withC("exp", now-31), true, token.OutcomeExpired},
		{"iat in future", withC("iat", now+120), false, token.OutcomeNotYetValid},
		{"nbf in future", withC("nbf", now+120), false, token.OutcomeNotYetValid},
		{"missing sub", withC("sub", nil), false, token.OutcomeBadClaims},
		{"missing jti", withC("jti", nil), false, token.OutcomeBadClaims},
		{"sub changed", withC("sub", "oSomeoneElse00000000000000"), false, token.OutcomeBadSessionKey},
		{"jti changed", withC("jti", "another-jti"), false, token.OutcomeBadSessionKey},
		{"session key from another token", withC("wxsk", otherClaims["wxsk"]), false, token.OutcomeBadSessionKey},
		{"session key bit-flipped", withC("wxsk", string(flipped)), false, token.OutcomeBadSessionKey},
		{"session key truncated", withC("wxsk", sk[:len(sk)-10]), false, token.OutcomeBadSessionKey},
		{"session key unknown enc kid", withC("wxsk", pieces[0]+".nokey."+pieces[2]), false, token.OutcomeBadSessionKey},
		{"session key missing", withC("wxsk", nil), false, token.OutcomeBadSessionKey},
		{"session key wrong version", withC("wxsk", "v9."+pieces[1]+"."+pieces[2]), false, token.OutcomeBadSessionKey},
		{"over-long token", good.Token + strings.Repeat("A", token.MaxTokenBytes), false, token.OutcomeMalformed},
		{"over-long header", withH("pad", strings.Repeat("p", 600)), false, token.OutcomeMalformed},
		{"garbage", "a.b.c", false, token.OutcomeMalformed},
		{"empty", "", false, token.OutcomeMalformed},
		{"non-canonical base64 signature", parts[0] + "." + parts[1] + "." + parts[2] + "=", false, token.OutcomeMalformed},
		// Issue 11.13: a leaked signing key must not mint long-lived tokens,
		// and NumericDates are JSON numbers, never strings.
		{"lifetime over 24h", withC("exp", now+int64(token.MaxLifetime/time.Second)+1), false, token.OutcomeBadClaims},
		{"century-long lifetime", withC("exp", now+100*365*24*3600), false, token.OutcomeBadClaims},
		{"lifetime over 24h by an old iat", withC("iat", now-int64(token.MaxLifetime/time.Second)-1), false, token.OutcomeBadClaims},
		{"exp as a string", withC("exp", strconv.FormatInt(now+3600, 10)), false, token.OutcomeMalformed},
		{"iat as a string", withC("iat", strconv.FormatInt(now, 10)), false, token.OutcomeMalformed},
		{"nbf as a string", withC("nbf", strconv.FormatInt(now-60, 10)), false, token.OutcomeMalformed},
		{"exp as null", withC("exp", json.RawMessage("null")), false, token.OutcomeMalformed},
		{"iat as an object", withC("iat", map[string]any{"n": now}), false, token.OutcomeMalformed},
		{"auth_time as a string", withC("auth_time", strconv.FormatInt(now, 10)), false, token.OutcomeMalformed},
		{"auth_time as null", withC("auth_time", json.RawMessage("null")), false, token.OutcomeMalformed},
		{"auth_time after iat", withC("auth_time", now+10), false, token.OutcomeBadClaims},
		{"auth_time in the future", withC("auth_time", now+120), false, token.OutcomeBadClaims},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			outcome = ""
			_, err := s.Verify(ctx, tc.tok)
			if !errors.Is(err, token.ErrInvalid) {
				t.Fatalf("Verify = %v, want ErrInvalid", err)
			}
			if outcome != tc.outcome {
				t.Errorf("outcome = %q, want %q", outcome, tc.outcome)
			}
			if got := errors.Is(err, token.ErrExpired); got != tc.expired {
				t.Errorf("ErrExpired = %v, want %v", got, tc.expired)
			}
		})
	}

	// Leeway: 29 s of skew is tolerated; 31 s past exp is not (above).
	if _, err := s.Verify(ctx, withC("exp", now-29)); err != nil {
		t.Errorf("within leeway: %v", err)
	}
	// Exactly the longest lifetime is accepted, and so are numeric dates
	// with a fraction or an exponent (still JSON numbers), and an nbf.
	for name, tok := range map[string]string{
		"lifetime of exactly 24h": withC("exp", now+int64(token.MaxLifetime/time.Second)),
		"exp with an exponent":    withC("exp", json.RawMessage(fmt.Sprintf("%.9e", float64(now+3600)))),
		"iat with a fraction":     withC("iat", json.RawMessage(strconv.FormatInt(now, 10)+".5")),
		"nbf in the past":         withC("nbf", now-60),
		"auth_time before iat":    withC("auth_time", now-3600),
		"auth_time missing":       withC("auth_time", nil),
	} {
		if _, err := s.Verify(ctx, tok); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := s.Verify(ctx, good.Token); err != nil {
		t.Fatalf("the untouched token must verify: %v", err)
	}
	if outcome != token.OutcomeOK {
		t.Errorf("outcome of a good token = %q, want ok", outcome)
	}
}

func TestVerifyAfterRotation(t *testing.T) {
	d, _ := mustDir(t, "ES256")
	clk := &clock{time.Now()}
	before := mustRing(t, d)
	s1 := mustService(t, before, clk)
	old, err := s1.Issue(context.Background(), token.Identity{AppID: appID, OpenID: openID, SessionKey: skText})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Rotate(false); err != nil {
		t.Fatal(err)
	}
	s2 := mustService(t, mustRing(t, d), clk)
	if sess, err := s2.Verify(context.Background(), old.Token); err != nil || sess.SessionKey.Reveal() != skText {
		t.Fatalf("old token after rotation: %v", err)
	}
	if err := d.Rotate(true); err != nil {
		t.Fatal(err)
	}
	s3 := mustService(t, mustRing(t, d), clk)
	if _, err := s3.Verify(context.Background(), old.Token); !errors.Is(err, token.ErrInvalid) {
		t.Fatalf("old token after emergency rotation: %v", err)
	}
}

func TestNewChecksConfig(t *testing.T) {
	d, _ := mustDir(t, "ES256")
	ks := staticKeys{mustRing(t, d)}
	tests := []struct {
		name string
		cfg  token.Config
	}{
		{"no issuer", token.Config{TTL: time.Hour, Audiences: []string{appID}, Keys: ks}},
		{"no ttl", token.Config{Issuer: issuer, Audiences: []string{appID}, Keys: ks}},
		{"no audience", token.Config{Issuer: issuer, TTL: time.Hour, Keys: ks}},
		{"no keys", token.Config{Issuer: issuer, TTL: time.Hour, Audiences: []string{appID}}},
		{"ttl over the longest lifetime", token.Config{Issuer: issuer, TTL: token.MaxLifetime + time.Second, Audiences: []string{appID}, Keys: ks}},
		{"negative cache size", token.Config{Issuer: issuer, TTL: time.Hour, Audiences: []string{appID}, Keys: ks, CacheEntries: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := token.New(tc.cfg); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func b64json(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func publicPEM(t testing.TB, ring *keys.Ring, kid string) []byte {
	t.Helper()
	k, ok := ring.VerificationKey(kid)
	if !ok {
		t.Fatal("no key")
	}
	der, err := x509.MarshalPKIXPublicKey(k.Public)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// TestAuthTime: a login's token carries auth_time = iat; a renewal carries
// it unchanged, whatever its own iat; a renewal more than MaxLifetime after
// the login is refused; a token without auth_time reads as auth_time = iat.
func TestAuthTime(t *testing.T) {
	d, _ := mustDir(t, "ES256")
	ring := mustRing(t, d)
	login := time.Unix(1_800_000_000, 0)
	clk := &clock{login}
	s := mustService(t, ring, clk)
	ctx := context.Background()
	issued, err := s.Issue(ctx, token.Identity{AppID: appID, OpenID: openID, SessionKey: skText})
	if err != nil {
		t.Fatal(err)
	}
	claims := decodePart(t, strings.Split(issued.Token, ".")[1])
	if at, ok := claims["auth_time"].(float64); !ok || int64(at) != login.Unix() || claims["iat"] != claims["auth_time"] {
		t.Fatalf("login token: auth_time %v, iat %v, want both %d", claims["auth_time"], claims["iat"], login.Unix())
	}
	sess, err := s.Verify(ctx, issued.Token)
	if err != nil {
		t.Fatal(err)
	}
	// Renew twice, an hour apart, then at exactly MaxLifetime.
	for _, after := range []time.Duration{time.Hour, 2 * time.Hour, token.MaxLifetime} {
		clk.t = login.Add(after)
		renewed, err := s.Issue(ctx, sess.Identity)
		if err != nil {
			t.Fatalf("renewal %v after login: %v", after, err)
		}
		if sess, err = s.Verify(ctx, renewed.Token); err != nil {
			t.Fatal(err)
		}
		// Capped at the login plus MaxLifetime (and the leeway), never a
		// whole TTL beyond it.
		if limit := login.Add(token.MaxLifetime + 30*time.Second); renewed.ExpiresAt.After(limit) ||
			!sess.ExpiresAt.Equal(renewed.ExpiresAt) || renewed.ExpiresIn != renewed.ExpiresAt.Sub(clk.t) {
			t.Errorf("renewal %v after login expires at %v (in %v), past the login's limit %v", after, renewed.ExpiresAt, renewed.ExpiresIn, limit)
		}
		if !sess.AuthTime.Equal(login) || !sess.IssuedAt.Equal(clk.t) {
			t.Errorf("renewal %v after login: auth_time %v, iat %v; want %v, %v", after, sess.AuthTime, sess.IssuedAt, login, clk.t)
		}
	}
	clk.t = login.Add(token.MaxLifetime + 31*time.Second) // past the 30 s leeway
	if _, err := s.Issue(ctx, sess.Identity); !errors.Is(err, token.ErrLoginTooOld) {
		t.Errorf("renewal past MaxLifetime: %v, want ErrLoginTooOld", err)
	}
	// A renewal whose auth_time is ahead of this replica's clock is
	// issued with auth_time = iat, never after it.
	clk.t = login
	id := sess.Identity
	id.AuthTime = login.Add(5 * time.Second)
	ahead, err := s.Issue(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if sess, err := s.Verify(ctx, ahead.Token); err != nil || !sess.AuthTime.Equal(login) {
		t.Errorf("auth_time ahead of the clock: %v, %v; want %v", sess, err, login)
	}

	// A token from before auth_time existed: auth_time reads as its iat.
	parts := strings.Split(issued.Token, ".")
	c := decodePart(t, parts[1])
	delete(c, "auth_time")
	clk.t = login.Add(time.Hour)
	old, err := s.Verify(ctx, forge{decodePart(t, parts[0]), c}.sign(t, ring))
	if err != nil {
		t.Fatal(err)
	}
	if !old.AuthTime.Equal(old.IssuedAt) {
		t.Errorf("no auth_time: AuthTime %v, want iat %v", old.AuthTime, old.IssuedAt)
	}
}
