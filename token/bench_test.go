package token_test

import (
	"context"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/token"
)

// BenchmarkIssue and BenchmarkVerify measure the whole per-request cost of
// the stateless design: what replaces a Redis round trip.
func BenchmarkIssue(b *testing.B) {
	for _, alg := range []string{"ES256", "EdDSA", "RS256"} {
		b.Run(alg, func(b *testing.B) {
			d, _ := mustDir(b, alg)
			s := mustService(b, mustRing(b, d), &clock{time.Now()})
			id := token.Identity{AppID: appID, OpenID: openID, SessionKey: skText}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Issue(context.Background(), id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	for _, alg := range []string{"ES256", "EdDSA", "RS256"} {
		b.Run(alg, func(b *testing.B) {
			d, _ := mustDir(b, alg)
			s := mustService(b, mustRing(b, d), &clock{time.Now()})
			issued, err := s.Issue(context.Background(), token.Identity{AppID: appID, OpenID: openID, SessionKey: skText})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Verify(context.Background(), issued.Token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
