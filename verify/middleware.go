package verify

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
)

type claimsKey struct{}

// WithClaims returns ctx carrying c; the middlewares put the verified
// claims in the request context this way.
func WithClaims(ctx context.Context, c *Claims) context.Context {
	return context.WithValue(ctx, claimsKey{}, c)
}

// ClaimsFrom returns the claims the middleware verified for this request.
func ClaimsFrom(ctx context.Context) (*Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*Claims)
	return c, ok && c != nil
}

// BearerToken extracts the token of an "Authorization: Bearer" header
// (RFC 6750 2.1). No header: ErrNoToken. Anything else than exactly one
// Bearer credential: ErrMalformedRequest.
func BearerToken(r *http.Request) (string, error) {
	values := r.Header.Values("Authorization")
	if len(values) == 0 {
		return "", ErrNoToken
	}
	if len(values) > 1 {
		return "", ErrMalformedRequest
	}
	scheme, tok, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", ErrMalformedRequest
	}
	tok = strings.TrimSpace(tok)
	if tok == "" || strings.ContainsAny(tok, " \t,") {
		return "", ErrMalformedRequest
	}
	return tok, nil
}

// Authenticate reads the bearer token of r and verifies it.
func (v *Verifier) Authenticate(r *http.Request) (*Claims, error) {
	tok, err := BearerToken(r)
	if err != nil {
		return nil, err
	}
	return v.Verify(r.Context(), tok)
}

// Middleware lets a request through with its Claims in the context
// (ClaimsFrom), or answers the RFC 6750 challenge WriteChallenge writes.
func (v *Verifier) Middleware(realm string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := v.Authenticate(r)
			if err != nil {
				WriteChallenge(w, realm, err)
				return
			}
			next.ServeHTTP(w, r.WithContext(WithClaims(r.Context(), c)))
		})
	}
}

// Challenge is the answer to a request that was not let through: its
// status, its WWW-Authenticate header (RFC 6750 3) and an RFC 9457 problem
// type. The descriptions are fixed strings: a caller learns whether to log
// in again, never which check failed.
type Challenge struct {
	Status          int
	WWWAuthenticate string
	Type            string
	Title           string
}

// ChallengeFor maps an error of Authenticate or Verify to its challenge:
// no token: 401 with no error code (RFC 6750 3.1); a malformed header: 400
// invalid_request; a refused or expired token: 401 invalid_token; keys that
// cannot be fetched: 503 with no challenge (the token was not judged).
func ChallengeFor(realm string, err error) Challenge {
	base := `Bearer realm="` + quote(realm) + `"`
	switch {
	case errors.Is(err, ErrNoToken):
		return Challenge{http.StatusUnauthorized, base, "urn:wxtoken:problem:unauthorized", "A bearer token is required."}
	case errors.Is(err, ErrMalformedRequest):
		return Challenge{http.StatusBadRequest, base + `, error="invalid_request", error_description="one Bearer token is expected"`,
			"urn:wxtoken:problem:invalid-request", "The Authorization header is malformed."}
	case errors.Is(err, ErrExpired):
		return Challenge{http.StatusUnauthorized, base + `, error="invalid_token", error_description="the access token expired"`,
			"urn:wxtoken:problem:invalid-token", "The access token expired; log in again."}
	case errors.Is(err, ErrInvalidToken):
		return Challenge{http.StatusUnauthorized, base + `, error="invalid_token", error_description="the access token is invalid"`,
			"urn:wxtoken:problem:invalid-token", "The access token is invalid; log in again."}
	default:
		return Challenge{http.StatusServiceUnavailable, "", "urn:wxtoken:problem:unavailable", "Tokens cannot be checked right now. Retry later."}
	}
}

// WriteChallenge answers err as ChallengeFor says, with an RFC 9457 body.
func WriteChallenge(w http.ResponseWriter, realm string, err error) {
	ch := ChallengeFor(realm, err)
	h := w.Header()
	if ch.WWWAuthenticate != "" {
		h.Set("WWW-Authenticate", ch.WWWAuthenticate)
	}
	if ch.Status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "5")
	}
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(ch.Status)
	_ = json.NewEncoder(w).Encode(ch.Problem())
}

// Problem is the RFC 9457 body of the challenge.
func (ch Challenge) Problem() map[string]any {
	return map[string]any{"type": ch.Type, "title": ch.Title, "status": ch.Status, "detail": ch.Title}
}

// quote escapes a realm for a quoted-string.
func quote(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s)
}
