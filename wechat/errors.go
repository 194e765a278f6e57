package wechat

import (
	"errors"
	"fmt"
	"time"
)

// Operation names, carried by errors so callers can tell which call failed
// (a 40029 means a different mistake on a phone code than on a login code).
const (
	OpCode2Session = "jscode2session"
	OpStableToken  = "stable_token"
	OpPhoneNumber  = "getuserphonenumber"
	OpCheckSession = "checksession"
)

// WeChat errcodes that callers or this package branch on.
const (
	CodeBusy               = -1
	CodeInvalidCredential  = 40001
	CodeInvalidAppID       = 40013
	CodeInvalidAccessToken = 40014
	CodeInvalidCode        = 40029
	CodeInvalidAppSecret   = 40125
	CodeCodeUsed           = 40163
	CodeHighRisk           = 40226
	CodeTokenExpired       = 42001
	CodeRateLimited        = 45011
	CodeInvalidSignature   = 87009
)

// APIError is WeChat answering with a non-zero errcode: WeChat is up and
// said no. Msg is WeChat's errmsg with the request's secrets (appsecret,
// access_token, code) replaced by value, in case an answer echoes them.
type APIError struct {
	Op   string
	Code int
	Msg  string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("wechat: %s: errcode %d: %s", e.Op, e.Code, e.Msg)
}

// UpstreamKind says how a call to WeChat failed when WeChat gave no usable
// answer, so callers can pick 502, 503 or 504.
type UpstreamKind int

const (
	// Unreachable: the connection failed or was reset.
	Unreachable UpstreamKind = iota
	// Timeout: WeChat did not answer within the configured time.
	Timeout
	// BadStatus: WeChat answered an HTTP status other than 200.
	BadStatus
	// BadAnswer: WeChat answered 200 with a body that is not the expected JSON.
	BadAnswer
	// CircuitOpen: recent calls failed, so this one was refused without trying.
	CircuitOpen
	// Overloaded: too many calls to WeChat are already in flight.
	Overloaded
)

var kindNames = [...]string{"unreachable", "timeout", "bad HTTP status", "bad answer", "circuit open", "overloaded"}

func (k UpstreamKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// UpstreamError is a call to WeChat that got no usable answer. It carries
// no URL: WeChat's URLs hold the appsecret and access_token in the query.
type UpstreamError struct {
	Op         string
	Kind       UpstreamKind
	Status     int           // the HTTP status, for BadStatus
	RetryAfter time.Duration // a hint for CircuitOpen and Overloaded
	Err        error         // the cause, already stripped of URLs
}

func (e *UpstreamError) Error() string {
	s := "wechat: " + e.Op + ": " + e.Kind.String()
	if e.Kind == BadStatus {
		s += fmt.Sprintf(" %d", e.Status)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *UpstreamError) Unwrap() error { return e.Err }

// InputError names a mistake in user data that does not depend on the key,
// so telling it exactly helps integrators and gives nothing to an attacker.
type InputError struct {
	Field  string
	Reason string
}

func (e *InputError) Error() string { return "wechat: " + e.Field + ": " + e.Reason }

// ErrDecrypt is the one error for every key-dependent decryption failure:
// bad padding, a wrong key, a plaintext that is not JSON, a watermark of
// another app. Telling them apart would make a padding oracle.
var ErrDecrypt = errors.New("wechat: user data does not decrypt with this session_key")
