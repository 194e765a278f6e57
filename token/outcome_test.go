package token_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/token"
)

// TestOutcomeOfAppsNoLongerServed: a token whose app stopped being served
// is a wrong audience, verified afresh or from the cache.
func TestOutcomeOfAppsNoLongerServed(t *testing.T) {
	d, _ := mustDir(t, "ES256")
	clk := &clock{time.Unix(1_800_000_000, 0)}
	var served atomic.Bool
	served.Store(true)
	var outcomes []token.Outcome
	for _, entries := range []int{0, 100} {
		s, err := token.New(token.Config{Issuer: issuer, TTL: time.Hour, Keys: staticKeys{mustRing(t, d)}, Now: clk.now,
			Accept: func(string) bool { return served.Load() }, CacheEntries: entries,
			Observe: func(o token.Outcome) { outcomes = append(outcomes, o) }})
		if err != nil {
			t.Fatal(err)
		}
		served.Store(true)
		issued, err := s.Issue(context.Background(), token.Identity{AppID: appID, OpenID: openID, SessionKey: skText})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Verify(context.Background(), issued.Token); err != nil {
			t.Fatal(err)
		}
		served.Store(false)
		if _, err := s.Verify(context.Background(), issued.Token); err == nil {
			t.Fatal("a token of an app no longer served verified")
		}
	}
	want := []token.Outcome{token.OutcomeOK, token.OutcomeWrongAudience, token.OutcomeOK, token.OutcomeWrongAudience}
	if len(outcomes) != len(want) {
		t.Fatalf("outcomes = %v, want %v", outcomes, want)
	}
	for i := range want {
		if outcomes[i] != want[i] {
			t.Errorf("outcomes = %v, want %v", outcomes, want)
			break
		}
	}
}
