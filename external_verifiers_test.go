package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// freeAddr picks a loopback address for a server whose issuer must be its
// own URL (the external verifiers below resolve the issuer themselves).
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestExternalVerifiers runs the README's Node (jose) and Python (Debian's
// PyJWT) verifiers against a real wxtoken, from the issuer alone. They need
// node with clients/node_modules and python3-jwt, which .ci/run installs and
// then sets WXTOKEN_EXTERNAL_VERIFIERS=1; without it the test says so and
// skips.
func TestExternalVerifiers(t *testing.T) {
	t.Parallel()
	if os.Getenv("WXTOKEN_EXTERNAL_VERIFIERS") == "" {
		t.Skip("set WXTOKEN_EXTERNAL_VERIFIERS=1 with node (npm ci in clients/) and python3-jwt installed; .ci/run does")
	}
	f := newFixture(t, testAppID)
	addr := freeAddr(t)
	issuer := "http://" + addr
	s := startServer(t, f.env.with("WXTOKEN_ADDR", addr, "WXTOKEN_ISSUER", issuer))
	good, answer := login(t, s.URL, "external")
	parts := splitToken(good)
	badTyp := b64([]byte(`{"alg":"ES256","kid":"`+kidOf(t, good)+`","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2]

	verifiers := []struct {
		name string
		cmd  []string
	}{
		{"jose", []string{"node", "clients/verifiers/jose.mjs"}},
		{"pyjwt", []string{"/usr/bin/python3", "clients/verifiers/pyjwt.py"}},
	}
	tests := []struct {
		name, appid, token string
		ok                 bool
	}{
		{"good", testAppID, good, true},
		{"another appid", "wx9999888877776666", good, false},
		{"tampered", testAppID, parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])-4] + "AAAA", false},
		{"typ JWT", testAppID, badTyp, false},
	}
	for _, v := range verifiers {
		for _, tc := range tests {
			t.Run(v.name+"/"+tc.name, func(t *testing.T) {
				out, err := exec.Command(v.cmd[0], append(v.cmd[1:], issuer, tc.appid, tc.token)...).CombinedOutput()
				if !tc.ok && !strings.Contains(string(out), "refused") {
					t.Errorf("not refused by the verifier (a crash?): %s", out)
				}
				if tc.ok != (err == nil) {
					t.Fatalf("ok = %v, want %v: %s", err == nil, tc.ok, out)
				}
				if tc.ok && !strings.Contains(string(out), `"openid": "`+answer["openid"].(string)) &&
					!strings.Contains(string(out), `"openid":"`+answer["openid"].(string)) {
					t.Errorf("output %s lacks the openid", out)
				}
			})
		}
	}
}

// haproxyConfig is the README's gateway: HAProxy 2.6 checks typ, iss, aud
// (a JSON string), exp, and the signature with the key file its kid names;
// the per-kid lines come from examples/jwks2pem.
const haproxyConfig = `global
    maxconn 100
defaults
    mode http
    timeout connect 5s
    timeout client 5s
    timeout server 5s
frontend api
    bind %s
    http-request set-var(txn.bearer) http_auth_bearer
    http-request deny deny_status 401 unless { var(txn.bearer) -m found }
    http-request set-var(txn.kid) var(txn.bearer),jwt_header_query('$.kid')
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_header_query('$.typ') -m str at+jwt }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('$.iss') -m str %s }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('$.aud') -m str %s }
    http-request set-var(txn.now) date
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('$.exp','int'),sub(txn.now) -m int gt 0 }
%s    http-request deny deny_status 401 unless { var(txn.sig) -m int 1 }
    http-request set-var(txn.sub) var(txn.bearer),jwt_payload_query('$.sub')
    http-request return status 200 content-type text/plain lf-string "%%[var(txn.sub)]"
`

// TestHAProxyGateway runs HAProxy 2.6 as the README configures it, with the
// key files examples/jwks2pem writes, against a real wxtoken.
func TestHAProxyGateway(t *testing.T) {
	t.Parallel()
	if os.Getenv("WXTOKEN_EXTERNAL_VERIFIERS") == "" {
		t.Skip("set WXTOKEN_EXTERNAL_VERIFIERS=1 with haproxy (2.6) installed; .ci/run does")
	}
	f := newFixture(t, testAppID)
	addr := freeAddr(t)
	issuer := "http://" + addr
	s := startServer(t, f.env.with("WXTOKEN_ADDR", addr, "WXTOKEN_ISSUER", issuer))
	dir := t.TempDir()
	lines, err := exec.Command("go", "run", "./examples/jwks2pem", issuer, filepath.Join(dir, "keys")).Output()
	if err != nil {
		t.Fatalf("jwks2pem: %v", err)
	}
	gw := freeAddr(t)
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(haproxyConfig, gw, issuer, testAppID, lines)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("haproxy", "-c", "-f", cfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	cmd := exec.Command("haproxy", "-db", "-f", cfg)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	eventually(t, 10*time.Second, "haproxy listening", func() bool {
		c, err := net.Dial("tcp", gw)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})

	good, answer := login(t, s.URL, "haproxy")
	parts := splitToken(good)
	tests := []struct {
		name, token string
		status      int
	}{
		{"good", good, 200},
		{"no token", "", 401},
		{"tampered signature", parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])-4] + "AAAA", 401},
		{"typ JWT", b64([]byte(`{"alg":"ES256","kid":"`+kidOf(t, good)+`","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2], 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := do(t, http.MethodGet, "http://"+gw+"/", tc.token, "", nil)
			if c.Status != tc.status {
				t.Fatalf("status %d, want %d: %s", c.Status, tc.status, c.Body)
			}
			if tc.status == 200 && string(c.Body) != answer["openid"] {
				t.Errorf("body %q, want the openid", c.Body)
			}
		})
	}
}
