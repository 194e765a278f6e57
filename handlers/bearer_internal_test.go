package handlers

import (
	"strings"
	"testing"
)

// TestB64tokenSet checks the bit sets of isB64token against RFC 6750's
// b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func TestB64tokenSet(t *testing.T) {
	const allowed = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/="
	for ch := range 256 {
		if want := strings.IndexByte(allowed, byte(ch)) >= 0; isB64token(byte(ch)) != want {
			t.Errorf("isB64token(%q) = %v, want %v", byte(ch), !want, want)
		}
	}
}
