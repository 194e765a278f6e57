package token_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/token"
)

// TestPerAppTTLAndRiskRank: an identity's own TTL shortens the token (never
// lengthens it past the service's, which key retention is computed from),
// and a risk rank travels in the risk_rank claim and back.
func TestPerAppTTLAndRiskRank(t *testing.T) {
	d, _ := mustDir(t, "ES256")
	clk := &clock{time.Unix(1_800_000_000, 0)}
	s := mustService(t, mustRing(t, d), clk)
	ctx := context.Background()
	rank := 3
	issued, err := s.Issue(ctx, token.Identity{AppID: appID, OpenID: openID, SessionKey: skText, TTL: 10 * time.Minute, RiskRank: &rank})
	if err != nil {
		t.Fatal(err)
	}
	if issued.ExpiresIn != 10*time.Minute || !issued.ExpiresAt.Equal(clk.t.Add(10*time.Minute)) {
		t.Errorf("expiry %v %v, want 10m", issued.ExpiresIn, issued.ExpiresAt)
	}
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(issued.Token, ".")[1])
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if claims["risk_rank"] != float64(3) {
		t.Errorf("risk_rank claim = %v, want 3", claims["risk_rank"])
	}
	sess, err := s.Verify(ctx, issued.Token)
	if err != nil {
		t.Fatal(err)
	}
	if sess.RiskRank == nil || *sess.RiskRank != 3 {
		t.Errorf("verified risk rank %v", sess.RiskRank)
	}
	plain, err := s.Issue(ctx, token.Identity{AppID: appID, OpenID: openID, SessionKey: skText})
	if err != nil {
		t.Fatal(err)
	}
	payload, _ = base64.RawURLEncoding.DecodeString(strings.Split(plain.Token, ".")[1])
	claims = nil
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if _, ok := claims["risk_rank"]; ok {
		t.Error("risk_rank present without a rank")
	}
	if _, err := s.Issue(ctx, token.Identity{AppID: appID, OpenID: openID, SessionKey: skText, TTL: 3 * time.Hour}); err == nil {
		t.Error("a TTL over the service's was accepted")
	}
	clk.t = clk.t.Add(11 * time.Minute)
	if _, err := s.Verify(ctx, issued.Token); !errors.Is(err, token.ErrExpired) {
		t.Errorf("token past its app's TTL: %v, want expired", err)
	}
}

// TestAcceptFunc: with Accept, the audiences served can change while the
// service runs; a token for an appid no longer accepted is refused.
func TestAcceptFunc(t *testing.T) {
	d, _ := mustDir(t, "ES256")
	ring := mustRing(t, d)
	served := map[string]bool{appID: true, "wx9999888877776666": true}
	s, err := token.New(token.Config{Issuer: issuer, TTL: time.Hour, Keys: staticKeys{ring},
		Accept: func(a string) bool { return served[a] }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	other, err := s.Issue(ctx, token.Identity{AppID: "wx9999888877776666", OpenID: openID, SessionKey: skText})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(ctx, other.Token); err != nil {
		t.Fatalf("served audience refused: %v", err)
	}
	delete(served, "wx9999888877776666")
	if _, err := s.Verify(ctx, other.Token); !errors.Is(err, token.ErrInvalid) {
		t.Errorf("audience no longer served: %v, want invalid", err)
	}
}
