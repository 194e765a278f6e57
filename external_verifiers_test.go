package main

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
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
