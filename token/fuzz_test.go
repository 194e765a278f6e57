package token_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/token"
)

// FuzzVerify: no input panics Verify, and whatever it accepts speaks for
// the same user, app and token as the one genuine token (ECDSA signatures
// are malleable, so a mutated signature may still verify: the claims may not
// change).
func FuzzVerify(f *testing.F) {
	d, _ := mustDir(f, "ES256")
	s := mustService(f, mustRing(f, d), &clock{time.Now()})
	issued, err := s.Issue(context.Background(), token.Identity{AppID: appID, OpenID: openID, SessionKey: skText})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(issued.Token)
	parts := strings.Split(issued.Token, ".")
	f.Add(parts[0] + "." + parts[1] + ".")
	f.Add("eyJhbGciOiJub25lIn0." + parts[1] + ".")
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, raw string) {
		sess, err := s.Verify(context.Background(), raw)
		if err != nil {
			return
		}
		if sess.ID != issued.ID || sess.OpenID != openID || sess.AppID != appID || sess.SessionKey.Reveal() != skText {
			t.Fatalf("accepted a forged token: %+v", sess)
		}
	})
}

// FuzzSessionKeyClaim: a validly signed token whose sealed session_key
// claim is replaced by arbitrary text never panics and never opens, unless it
// is the genuine claim.
func FuzzSessionKeyClaim(f *testing.F) {
	d, _ := mustDir(f, "ES256")
	ring := mustRing(f, d)
	s := mustService(f, ring, &clock{time.Now()})
	issued, err := s.Issue(context.Background(), token.Identity{AppID: appID, OpenID: openID, SessionKey: skText})
	if err != nil {
		f.Fatal(err)
	}
	parts := strings.Split(issued.Token, ".")
	var header, claims map[string]any
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	cb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	_ = json.Unmarshal(hb, &header)
	_ = json.Unmarshal(cb, &claims)
	genuine := claims["wxsk"].(string)
	f.Add(genuine)
	f.Add(genuine[:len(genuine)-4])
	f.Add("v1..")
	f.Add("v1.x.AAAA")
	f.Fuzz(func(t *testing.T, wxsk string) {
		c := copyMap(claims)
		c["wxsk"] = wxsk
		raw := forge{header, c}.sign(t, ring)
		sess, err := s.Verify(context.Background(), raw)
		if err == nil && (wxsk != genuine || sess.SessionKey.Reveal() != skText) {
			t.Fatalf("a tampered session key claim opened: %q", wxsk)
		}
	})
}

// FuzzCachedVerifyAgrees: for any input, a service with the verified-token
// cache answers, on first use and on reuse, exactly what a service without
// it answers (same session, or an error with the same text).
func FuzzCachedVerifyAgrees(f *testing.F) {
	d, _ := mustDir(f, "ES256")
	ring := mustRing(f, d)
	clk := &clock{time.Now()}
	plain := mustService(f, ring, clk)
	cached, err := token.New(token.Config{Issuer: issuer, TTL: 2 * time.Hour, Leeway: 30 * time.Second,
		Audiences: []string{appID}, Keys: staticKeys{ring}, Now: clk.now, CacheEntries: 64})
	if err != nil {
		f.Fatal(err)
	}
	issued, err := plain.Issue(context.Background(), token.Identity{AppID: appID, OpenID: openID, SessionKey: skText})
	if err != nil {
		f.Fatal(err)
	}
	parts := strings.Split(issued.Token, ".")
	f.Add(issued.Token)
	f.Add(issued.Token + "A")
	f.Add(parts[0] + "." + parts[1] + ".")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, raw string) {
		want, wantErr := plain.Verify(context.Background(), raw)
		for _, round := range []string{"first", "again"} {
			got, err := cached.Verify(context.Background(), raw)
			if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
				t.Fatalf("%s use: cached err %v, plain err %v", round, err, wantErr)
			}
			if err == nil && *got != *want {
				t.Fatalf("%s use: cached %+v, plain %+v", round, got, want)
			}
		}
	})
}
