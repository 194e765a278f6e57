// Package secret holds values that must never reach a log line, an error
// message or a JSON answer by accident: WeChat session keys and app secrets.
//
// A secret.String prints as "[redacted]" through fmt, slog and encoding/json,
// so a careless %v, slog.Any or json.Marshal shows nothing. Code that really
// needs the value calls Reveal, which is easy to find in review.
package secret

import (
	"fmt"
	"log/slog"
)

const redacted = "[redacted]"

// String is a secret text value. Its zero value is the empty secret.
type String string

// Reveal returns the secret itself. Call it only at the point of use
// (a cipher, an HMAC, an outgoing request), never to log or answer.
func (s String) Reveal() string { return string(s) }

// Empty reports whether no secret is set, without revealing it.
func (s String) Empty() bool { return s == "" }

// String keeps the value out of fmt's %s and %v.
func (String) String() string { return redacted }

// GoString keeps the value out of fmt's %#v.
func (String) GoString() string { return redacted }

// Format keeps the value out of every other fmt verb (%q, %x, …).
func (String) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue keeps the value out of slog, whatever the handler.
func (String) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON keeps the value out of JSON answers and JSON logs.
func (String) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText keeps the value out of text encoders (slog's TextHandler, YAML).
func (String) MarshalText() ([]byte, error) { return []byte(redacted), nil }
