package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/google/go-cmp/cmp"
)

// testIssuer is an issuer that is not the listener's address, as in
// production behind a proxy; issuerClient resolves its host to the test
// server, like an /etc/hosts entry would.
const testIssuer = "http://auth.wxtoken.test"

func issuerClient(t testing.TB, serverURL string) *http.Client {
	t.Helper()
	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := url.Parse(testIssuer)
	if err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == issuer.Host+":80" {
			addr = u.Host
		}
		return d.DialContext(ctx, network, addr)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// TestDiscoveryDocuments: both documents carry exactly the true fields, the
// issuer byte for byte, and answer HEAD.
func TestDiscoveryDocuments(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	issuer := "https://auth.example.test/tenant-a" // a path, no trailing slash: kept as given
	s := startServer(t, f.env.with("WXTOKEN_ISSUER", issuer))
	oauth := map[string]any{
		"issuer":                   issuer,
		"jwks_uri":                 issuer + "/.well-known/jwks.json",
		"response_types_supported": []any{},
		"grant_types_supported":    []any{},
	}
	openid := map[string]any{
		"subject_types_supported":               []any{"pairwise"},
		"id_token_signing_alg_values_supported": []any{"ES256"},
	}
	for k, v := range oauth {
		openid[k] = v
	}
	tests := []struct {
		path string
		want map[string]any
	}{
		{"/.well-known/oauth-authorization-server", oauth},
		{"/.well-known/openid-configuration", openid},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			c := do(t, http.MethodGet, s.URL+tc.path, "", "", nil)
			if c.Status != http.StatusOK {
				t.Fatalf("status %d: %s", c.Status, c.Body)
			}
			if diff := cmp.Diff(tc.want, c.json(t)); diff != "" {
				t.Errorf("document (-want +got):\n%s", diff)
			}
			if cc := c.Header.Get("Cache-Control"); cc != "public, max-age=300" {
				t.Errorf("Cache-Control = %q", cc)
			}
		})
	}
}

// TestHeadOnEveryGetRoute: HEAD answers what GET answers, without a body.
func TestHeadOnEveryGetRoute(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	s := startServer(t, f.env)
	for _, path := range []string{"/healthz", "/readyz", "/.well-known/jwks.json", "/openapi.yaml",
		"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"} {
		t.Run(path, func(t *testing.T) {
			get := do(t, http.MethodGet, s.URL+path, "", "", nil)
			head := do(t, http.MethodHead, s.URL+path, "", "", nil)
			if head.Status != http.StatusOK || get.Status != http.StatusOK {
				t.Fatalf("HEAD %d, GET %d", head.Status, get.Status)
			}
			if len(head.Body) != 0 {
				t.Errorf("HEAD answered a %d-byte body", len(head.Body))
			}
			if h, g := head.Header.Get("Content-Type"), get.Header.Get("Content-Type"); h != g {
				t.Errorf("HEAD Content-Type %q, GET %q", h, g)
			}
		})
	}
}

// TestGoOIDCVerifiesFromIssuerAlone: coreos/go-oidc, given only the issuer,
// discovers the keys and their algorithms and verifies a wxtoken access
// token (go-oidc ignores typ, so at+jwt passes; the client id is the appid,
// which is the token's aud).
func TestGoOIDCVerifiesFromIssuerAlone(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	s := startServer(t, f.env.with("WXTOKEN_ISSUER", testIssuer))
	ctx := oidc.ClientContext(context.Background(), issuerClient(t, s.URL))

	provider, err := oidc.NewProvider(ctx, testIssuer)
	if err != nil {
		t.Fatalf("NewProvider: %v", err)
	}
	tok, _ := login(t, s.URL, "oidc-code")

	tests := []struct {
		name     string
		clientID string
		raw      string
		wantErr  bool
	}{
		{"valid token", testAppID, tok, false},
		{"another app's client id", "wx9999888877776666", tok, true},
		{"tampered signature", testAppID, tok[:len(tok)-4] + "AAAA", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			idt, err := provider.Verifier(&oidc.Config{ClientID: tc.clientID}).Verify(ctx, tc.raw)
			if tc.wantErr {
				if err == nil {
					t.Fatal("verified; want refused")
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			var claims struct {
				ClientID string `json:"client_id"`
			}
			if err := idt.Claims(&claims); err != nil {
				t.Fatal(err)
			}
			if idt.Issuer != testIssuer || idt.Subject == "" || claims.ClientID != testAppID {
				t.Errorf("iss %q sub %q client_id %q", idt.Issuer, idt.Subject, claims.ClientID)
			}
		})
	}
}

// TestSingleAudienceIsAString: a token for one appid writes aud as a JSON
// string, which simple gateways (HAProxy's jwt_payload_query) match.
func TestSingleAudienceIsAString(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	s := startServer(t, f.env)
	tok, _ := login(t, s.URL, "aud-code")
	var payload map[string]json.RawMessage
	if err := json.Unmarshal(mustSegment(t, tok, 1), &payload); err != nil {
		t.Fatal(err)
	}
	if got := string(payload["aud"]); got != `"`+testAppID+`"` {
		t.Errorf("aud = %s, want the JSON string %q", got, testAppID)
	}
}

// mustSegment decodes the i-th dot-separated part of a compact JWS.
func mustSegment(t testing.TB, raw string, i int) []byte {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func splitToken(raw string) []string { return strings.Split(raw, ".") }
