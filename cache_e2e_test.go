package main

import (
	"syscall"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/token"
	"github.com/wxtoken/wxtoken/wechat"
)

// TestEmergencyRotationRevokesCachedTokens: a real process with the
// verified-token cache on (the default) accepts a token twice (the second
// time from its cache); after 'keys rotate --now' and SIGHUP, the first
// call once the new keys are live refuses the same token. Polling is off,
// so only SIGHUP reloads; the test waits for the JWKS to change (the reload
// happened), then asks once, with no retry.
func TestEmergencyRotationRevokesCachedTokens(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an OS process")
	}
	t.Parallel()
	f := newFixture(t, testAppID)
	e := f.env.with("WXTOKEN_RELOAD_INTERVAL", "1h")
	if cfg := loadConfig(e.getenv); cfg.TokenCacheEntries != token.DefaultCacheEntries {
		t.Fatalf("the cache is not on by default: %d entries", cfg.TokenCacheEntries)
	}
	p := startProcess(t, e)
	tok, answer := login(t, p.URL, "cached-then-revoked")
	sk := secret.String(f.emu.CurrentSessionKey(testAppID, answer["openid"].(string)))
	data, iv, err := wechat.EncryptUserData(sk, []byte(`{"stepInfoList":[],"watermark":{"appid":"`+testAppID+`","timestamp":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	decrypt := func() call {
		return postJSON(t, p.URL+"/v1/decrypt", tok, map[string]string{"encryptedData": data, "iv": iv})
	}
	for i := range 2 {
		if c := decrypt(); c.Status != 200 {
			t.Fatalf("decrypt %d before rotation: %d %s", i, c.Status, c.Body)
		}
	}
	oldKID := kidOf(t, tok)

	mustRun(t, e, "keys", "rotate", "--now")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "SIGHUP loads the new keys", func() bool {
		return !contains(jwksKids(t, p.URL), oldKID)
	})
	c := decrypt()
	assertProblem(t, c, 401, "invalid-token")
}

// TestTokenCacheEntriesConfig: the cache size is configurable, 0 turns it
// off, and nonsense is refused at start.
func TestTokenCacheEntriesConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		value string
		want  int
		ok    bool
	}{
		{"", token.DefaultCacheEntries, true},
		{"0", 0, true},
		{"500", 500, true},
		{"1000000", 1_000_000, true},
		{"-1", 0, false},
		{"1000001", 0, false},
		{"many", 0, false},
	} {
		t.Run(tc.value, func(t *testing.T) {
			e := env{"WXTOKEN_TOKEN_CACHE_ENTRIES": tc.value}
			cfg := loadConfig(e.getenv)
			err := cfg.validate()
			if (err == nil) != tc.ok {
				t.Fatalf("validate = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && cfg.TokenCacheEntries != tc.want {
				t.Fatalf("%d entries, want %d", cfg.TokenCacheEntries, tc.want)
			}
		})
	}
}
