package token

import (
	"errors"
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

// Outcome is how one Verify ended, for metrics: a fixed set of names, so a
// verifier's counters never grow with what callers send.
type Outcome string

// Verify's outcomes.
const (
	OutcomeOK            Outcome = "ok"     // verified in full
	OutcomeCached        Outcome = "cached" // verified before; time claims checked again
	OutcomeExpired       Outcome = "expired"
	OutcomeNotYetValid   Outcome = "not_yet_valid" // nbf or iat in the future
	OutcomeMalformed     Outcome = "malformed"     // not a JWS of the expected shape and size
	OutcomeUnknownKID    Outcome = "unknown_kid"
	OutcomeBadHeader     Outcome = "bad_header" // typ, alg or a refused header (jku, x5u, crit, ...)
	OutcomeBadSignature  Outcome = "bad_signature"
	OutcomeWrongAudience Outcome = "wrong_audience"
	OutcomeWrongIssuer   Outcome = "wrong_issuer"
	OutcomeBadClaims     Outcome = "bad_claims"      // a required claim missing or inconsistent
	OutcomeBadSessionKey Outcome = "bad_session_key" // the sealed wxsk claim does not open
	OutcomeError         Outcome = "error"           // not the token's fault: no keys loaded
)

// Outcomes lists every Outcome, so metrics can show each at zero.
func Outcomes() []Outcome {
	return []Outcome{OutcomeOK, OutcomeCached, OutcomeExpired, OutcomeNotYetValid, OutcomeMalformed,
		OutcomeUnknownKID, OutcomeBadHeader, OutcomeBadSignature, OutcomeWrongAudience, OutcomeWrongIssuer,
		OutcomeBadClaims, OutcomeBadSessionKey, OutcomeError}
}

// Markers wrapped into Verify's errors (beside ErrInvalid) so outcomeOf
// can tell failures apart; their text never reaches a caller's answer.
var (
	errMalformed  = errors.New("malformed")
	errUnknownKID = errors.New("unknown kid")
	errSealedKey  = errors.New("sealed session key")
	// errWrongAudience: the audience is not an app served here (Config.Accept).
	errWrongAudience = errors.New("wrong audience")
)

// outcomeOf names the outcome of a Verify that returned err.
func outcomeOf(err error, cached bool) Outcome {
	switch {
	case err == nil && cached:
		return OutcomeCached
	case err == nil:
		return OutcomeOK
	case !errors.Is(err, ErrInvalid):
		return OutcomeError
	case errors.Is(err, ErrExpired):
		return OutcomeExpired
	case errors.Is(err, errMalformed), errors.Is(err, jwt.ErrTokenMalformed):
		return OutcomeMalformed
	case errors.Is(err, errUnknownKID):
		return OutcomeUnknownKID
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return OutcomeBadHeader
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return OutcomeBadSignature
	case errors.Is(err, jwt.ErrTokenInvalidAudience), errors.Is(err, errWrongAudience):
		return OutcomeWrongAudience
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return OutcomeWrongIssuer
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return OutcomeNotYetValid
	case errors.Is(err, errSealedKey):
		return OutcomeBadSessionKey
	}
	return OutcomeBadClaims
}

// markedError is a refusal that wraps ErrInvalid and a marker for
// outcomeOf, with the text invalid would give.
type markedError struct {
	marker error
	msg    string
}

func (e *markedError) Error() string   { return ErrInvalid.Error() + ": " + e.msg }
func (e *markedError) Unwrap() []error { return []error{ErrInvalid, e.marker} }

// invalidAs is invalid with marker wrapped too.
func invalidAs(marker error, format string, args ...any) error {
	return &markedError{marker: marker, msg: fmt.Sprintf(format, args...)}
}
