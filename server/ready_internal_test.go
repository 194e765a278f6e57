package server

import (
	"testing"
	"time"
)

// TestKeysStaleAfterIsTwoPolls: /readyz forgives one failed poll of the
// keys directory (a CLI caught mid-change) and turns 503 after two. The
// keys side, Stale(after), is keys' TestFIFOInKeysDirIsRefused; the flip
// through serve is the root TestFIFOManifestFlipsReadyz.
func TestKeysStaleAfterIsTwoPolls(t *testing.T) {
	for _, poll := range []time.Duration{100 * time.Millisecond, time.Second, time.Minute} {
		if got := keysStaleAfter(poll); got != 2*poll {
			t.Errorf("keysStaleAfter(%v) = %v, want %v", poll, got, 2*poll)
		}
	}
}
