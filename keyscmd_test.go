package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

// TestKeysInitAlgChoosesTheSigningKey: 'keys init --alg' decides what signs
// the tokens and what the JWKS publishes; RSA keys are 2048 bits or more.
func TestKeysInitAlgChoosesTheSigningKey(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	for _, tc := range []struct {
		alg, kty string
	}{
		{"ES256", "EC"},
		{"EdDSA", "OKP"},
		{"RS256", "RSA"},
	} {
		t.Run(tc.alg, func(t *testing.T) {
			e := f.env.with("WXTOKEN_KEYS_DIR", filepath.Join(t.TempDir(), "keys"))
			if out := mustRun(t, e, "keys", "init", "--alg", tc.alg); !strings.Contains(out, "created "+tc.alg) {
				t.Fatalf("keys init --alg %s said %q", tc.alg, out)
			}
			s := startServer(t, e)
			raw, _ := login(t, s.URL, "alg-"+tc.alg)
			tok, _ := verifyDownstream(t, s.URL, "https://auth.example.test", testAppID, raw)
			if tok.Method.Alg() != tc.alg {
				t.Fatalf("token signed with %s, want %s", tok.Method.Alg(), tc.alg)
			}
			var set struct {
				Keys []struct{ Kty, Alg, N string }
			}
			if err := json.Unmarshal(do(t, "GET", s.URL+"/.well-known/jwks.json", "", "", nil).Body, &set); err != nil {
				t.Fatal(err)
			}
			if len(set.Keys) != 2 {
				t.Fatalf("JWKS has %d keys, want the active and the next", len(set.Keys))
			}
			for _, k := range set.Keys {
				if k.Kty != tc.kty || k.Alg != tc.alg {
					t.Errorf("JWKS key kty %s alg %s, want %s %s", k.Kty, k.Alg, tc.kty, tc.alg)
				}
				if tc.kty == "RSA" {
					n, err := base64.RawURLEncoding.DecodeString(k.N)
					if err != nil || len(n)*8 < 2048 {
						t.Errorf("RSA modulus of %d bits, want at least 2048", len(n)*8)
					}
				}
			}
		})
	}
	var stderr bytes.Buffer
	e := f.env.with("WXTOKEN_KEYS_DIR", filepath.Join(t.TempDir(), "keys"))
	if err := run(context.Background(), []string{"wxtoken", "keys", "init", "--alg", "HS256"}, e.getenv, &bytes.Buffer{}, &stderr); err == nil {
		t.Fatal("keys init --alg HS256 succeeded")
	}
}

// TestKeysListAndPrune: 'keys list' names every key with its kind, alg,
// state, creation and prune time; 'keys prune' removes exactly the retired
// keys whose tokens can no longer be valid; rotating again before the JWKS
// max-age has passed warns.
func TestKeysListAndPrune(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	e := f.env

	var out, stderr bytes.Buffer
	if err := run(context.Background(), []string{"wxtoken", "keys", "rotate"}, e.getenv, &out, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "warning: the next signing key") {
		t.Errorf("rotating right after init did not warn that caches may not know the next key yet: %q", stderr.String())
	}
	if strings.Contains(stderr.String(), "PRIVATE") {
		t.Fatal("rotate printed key material")
	}

	text := mustRun(t, e, "keys", "list")
	header := strings.Fields(strings.SplitN(text, "\n", 2)[0])
	if strings.Join(header, " ") != "KID KIND ALG STATE CREATED PRUNE AFTER" {
		t.Errorf("keys list header %q", header)
	}
	rows := listKeys(t, e)
	var retired []keyRow
	for _, r := range rows {
		if r.KID == "" || r.Alg == "" || r.Created.IsZero() || (r.Kind != "signing" && r.Kind != "encryption") {
			t.Errorf("incomplete row %+v", r)
		}
		if !strings.Contains(text, r.KID) {
			t.Errorf("text listing lacks %s", r.KID)
		}
		if r.State == "retired" {
			retired = append(retired, r)
			if r.PruneAfter == nil || r.Retired == nil || !r.PruneAfter.After(*r.Retired) {
				t.Errorf("retired key without a later prune time: %+v", r)
			}
		}
	}
	if len(retired) != 2 || len(rows) != 6 {
		t.Fatalf("after one rotation: %d keys, %d retired; want 6 and 2 (one of each kind)", len(rows), len(retired))
	}
	if got := mustRun(t, e, "keys", "prune"); !strings.Contains(got, "nothing to prune") {
		t.Fatalf("prune before the retention passed: %q", got)
	}

	// Age the retired signing key past its retention, as time would.
	manifestPath := filepath.Join(f.keysDir, "keyset.json")
	raw, err := os.ReadFile(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	var gone string
	for _, k := range m["keys"].([]any) {
		k := k.(map[string]any)
		if k["state"] == "retired" && k["kind"] == "signing" {
			k["retired"] = time.Now().Add(-24 * time.Hour).UTC().Format(time.RFC3339Nano)
			gone = k["kid"].(string)
		}
	}
	aged, _ := json.Marshal(m)
	if err := os.WriteFile(manifestPath, aged, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := mustRun(t, e, "keys", "prune"); !strings.Contains(got, "pruned signing key "+gone) || strings.Count(got, "pruned") != 1 {
		t.Fatalf("prune said %q, want exactly the aged signing key %s", got, gone)
	}
	if _, err := os.Stat(filepath.Join(f.keysDir, gone+".pem")); !os.IsNotExist(err) {
		t.Errorf("the pruned key's file is still there (%v)", err)
	}
	if strings.Contains(mustRun(t, e, "keys", "list"), gone) {
		t.Error("keys list still shows the pruned key")
	}
	s := startServer(t, e)
	login(t, s.URL, "after-prune") // the directory is still whole
}

// TestSIGHUPReloadsAndCorruptKeyFilesAreRefused: with polling effectively
// off, SIGHUP alone makes a running process reload its keys; a key file
// that is corrupt after a rotation is refused (the last good keys keep
// serving and an error is logged), and the repaired directory is taken on
// the next SIGHUP.
func TestSIGHUPReloadsAndCorruptKeyFilesAreRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts OS processes")
	}
	t.Parallel()
	f := newFixture(t, testAppID)
	e := f.env.with("WXTOKEN_RELOAD_INTERVAL", "1h")
	p := startProcess(t, e)
	before, _ := login(t, p.URL, "hup-1")
	oldKID := kidOf(t, before)
	jwksBefore := jwksKids(t, p.URL)

	mustRun(t, e, "keys", "rotate")
	rows := listKeys(t, e)
	newActive, newNext := kidsIn(rows, "signing", "active")[0], kidsIn(rows, "signing", "next")[0]
	nextFile := filepath.Join(f.keysDir, newNext+".pem")
	good, err := os.ReadFile(nextFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(nextFile, []byte("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "an error is logged for the corrupt key file", func() bool {
		return strings.Contains(p.logs.String(), `"level":"ERROR"`)
	})
	if tok, _ := login(t, p.URL, "hup-2"); kidOf(t, tok) != oldKID {
		t.Fatalf("after a refused reload the token is signed by %s, want the last good %s", kidOf(t, tok), oldKID)
	}
	if got := jwksKids(t, p.URL); strings.Join(got, ",") != strings.Join(jwksBefore, ",") {
		t.Fatalf("JWKS changed on a refused reload: %v → %v", jwksBefore, got)
	}
	if c := postJSON(t, p.URL+"/v1/session/check", before, nil); c.Status != 200 {
		t.Fatalf("a token from before: %d %s", c.Status, c.Body)
	}

	if err := os.WriteFile(nextFile, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "SIGHUP reloads the repaired directory", func() bool {
		tok, _ := login(t, p.URL, "hup-3-"+time.Now().Format("150405.000000"))
		return kidOf(t, tok) == newActive
	})
	if c := postJSON(t, p.URL+"/v1/session/check", before, nil); c.Status != 200 {
		t.Fatalf("a token signed before the rotation, after it: %d %s", c.Status, c.Body)
	}
}

// leaveStrays plants what a 'keys rotate' killed half-way leaves: a
// temporary file holding a private key and a signing and an encryption key
// file the manifest does not name (copies of real ones, under fresh kids),
// plus an operator's file that is none of these. It returns the strays'
// names and the operator's file.
func leaveStrays(t *testing.T, dir string) (strays []string, notes string) {
	t.Helper()
	pems, _ := filepath.Glob(filepath.Join(dir, "*.pem"))
	jwks, _ := filepath.Glob(filepath.Join(dir, "enc-*.jwk"))
	if len(pems) == 0 || len(jwks) == 0 {
		t.Fatal("no key files to copy")
	}
	pem, _ := os.ReadFile(pems[0])
	jwk, _ := os.ReadFile(jwks[0])
	kid := func(b byte) string { return base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32)) }
	files := map[string][]byte{
		".tmp-1234567890":        pem,
		kid(1) + ".pem":          pem,
		"enc-" + kid(2) + ".jwk": jwk,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
		strays = append(strays, name)
	}
	notes = filepath.Join(dir, "NOTES.txt")
	if err := os.WriteFile(notes, []byte("rotated by hand\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return strays, notes
}

// TestStraysAreListedAndRemoved: files an interrupted rotation left behind
// (a .tmp-* file with a private key, unreferenced key files) show in 'keys
// list' and 'keys list --json' as strays, never serve, and 'keys prune' and
// the next 'keys rotate' remove them, leaving other files alone.
func TestStraysAreListedAndRemoved(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		remove []string
		expect string
	}{
		{"prune", []string{"keys", "prune"}, "removed stray file "},
		{"rotate", []string{"keys", "rotate"}, "rotated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, testAppID)
			strays, notes := leaveStrays(t, f.keysDir)

			text := mustRun(t, f.env, "keys", "list")
			if !strings.Contains(text, "3 stray file(s)") || !strings.Contains(text, "wxtoken keys prune") {
				t.Errorf("keys list does not report the strays:\n%s", text)
			}
			rows := listKeys(t, f.env)
			var listed []string
			for _, r := range rows {
				if r.State == "stray" {
					listed = append(listed, r.File)
				}
			}
			slices.Sort(listed)
			slices.Sort(strays)
			if !slices.Equal(listed, strays) {
				t.Errorf("keys list --json strays = %v, want %v", listed, strays)
			}
			if strings.Contains(text, "PRIVATE") || strings.Contains(text, "NOTES") {
				t.Errorf("keys list shows key material or a file that is not a stray:\n%s", text)
			}

			s := startServer(t, f.env)
			tok, _ := login(t, s.URL, "stray-"+tc.name)
			for _, k := range jwksKids(t, s.URL) {
				if strings.Contains(strings.Join(strays, " "), k) {
					t.Errorf("the stray key %s is published", k)
				}
			}
			if strings.Contains(strings.Join(strays, " "), kidOf(t, tok)) {
				t.Error("a stray key signed a token")
			}

			out := mustRun(t, f.env, tc.remove...)
			if !strings.Contains(out, tc.expect) {
				t.Errorf("%v said %q", tc.remove, out)
			}
			for _, name := range strays {
				if _, err := os.Stat(filepath.Join(f.keysDir, name)); !os.IsNotExist(err) {
					t.Errorf("stray %s is still there after %v (%v)", name, tc.remove, err)
				}
			}
			if _, err := os.Stat(notes); err != nil {
				t.Errorf("%v removed a file that is not a stray: %v", tc.remove, err)
			}
			for _, r := range listKeys(t, f.env) {
				if r.State == "stray" {
					t.Errorf("still listed as a stray after %v: %s", tc.remove, r.File)
				}
			}
			if got := mustRun(t, f.env, "keys", "prune"); !strings.Contains(got, "nothing to prune") {
				t.Errorf("a second prune said %q", got)
			}
		})
	}
}

// algOf is the alg in a token's header.
func algOf(t *testing.T, raw string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Alg string }
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	return h.Alg
}

// verifyWithCachedJWKS verifies raw the way a downstream service does that
// fetched the JWKS once, at the time cached was taken, and never again.
func verifyWithCachedJWKS(t *testing.T, cached []byte, raw string) error {
	t.Helper()
	kf, err := keyfunc.NewJWKSetJSON(cached)
	if err != nil {
		t.Fatal(err)
	}
	_, err = jwt.Parse(raw, kf.Keyfunc, jwt.WithValidMethods([]string{"ES256", "EdDSA", "RS256"}),
		jwt.WithIssuer("https://auth.example.test"), jwt.WithAudience(testAppID), jwt.WithExpirationRequired())
	return err
}

// TestAlgorithmMigration moves a deployment from ES256 to EdDSA with two
// rotations: 'keys init --alg EdDSA' on the ES256 directory refuses and
// says how; 'keys rotate --alg EdDSA' pre-publishes an EdDSA next key while
// ES256 still signs; the next plain rotation signs with it (and keeps
// EdDSA for the next key); a downstream that cached the JWKS before the
// switch accepts the EdDSA tokens; ES256 tokens keep verifying until their
// keys' retention passes, and are refused after.
func TestAlgorithmMigration(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	e := f.env.with("WXTOKEN_RELOAD_INTERVAL", "100ms")
	s := startServer(t, e)
	old, _ := login(t, s.URL, "mig-1")
	if algOf(t, old) != "ES256" {
		t.Fatalf("first token is %s, want ES256", algOf(t, old))
	}

	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"wxtoken", "keys", "init", "--alg", "EdDSA"}, e.getenv, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "ES256") || !strings.Contains(err.Error(), "keys rotate --alg EdDSA") {
		t.Errorf("keys init --alg EdDSA on an ES256 directory: %v (stdout %q)", err, stdout.String())
	}
	if out := mustRun(t, e, "keys", "init", "--alg", "ES256"); !strings.Contains(out, "nothing changed") {
		t.Errorf("keys init --alg ES256 on an ES256 directory said %q", out)
	}
	if out := mustRun(t, e, "keys", "init"); !strings.Contains(out, "nothing changed") {
		t.Errorf("keys init without --alg on an existing directory said %q", out)
	}
	if err := run(context.Background(), []string{"wxtoken", "keys", "rotate", "--alg", "HS256"}, e.getenv, &stdout, &stderr); err == nil {
		t.Error("keys rotate --alg HS256 succeeded")
	}

	mustRun(t, e, "keys", "rotate", "--alg", "EdDSA")
	algs := map[string]string{}
	for _, r := range listKeys(t, e) {
		if r.Kind == "signing" {
			algs[r.State] = r.Alg
		}
	}
	if algs["active"] != "ES256" || algs["next"] != "EdDSA" {
		t.Fatalf("after rotate --alg EdDSA: active %s, next %s; want ES256 and EdDSA", algs["active"], algs["next"])
	}
	edNext := kidsIn(listKeys(t, e), "signing", "next")[0]
	eventually(t, 10*time.Second, "the EdDSA next key is published", func() bool {
		return contains(jwksKids(t, s.URL), edNext)
	})
	if tok, _ := login(t, s.URL, "mig-2"); algOf(t, tok) != "ES256" {
		t.Errorf("before the next rotation tokens are %s, want ES256 still", algOf(t, tok))
	}
	cached := do(t, "GET", s.URL+"/.well-known/jwks.json", "", "", nil).Body

	mustRun(t, e, "keys", "rotate")
	rows := listKeys(t, e)
	for _, r := range rows {
		if r.Kind == "signing" && r.State != "retired" && r.Alg != "EdDSA" {
			t.Errorf("after the second rotation the %s signing key is %s, want EdDSA", r.State, r.Alg)
		}
	}
	var fresh string
	eventually(t, 10*time.Second, "tokens are signed by the EdDSA key", func() bool {
		fresh, _ = login(t, s.URL, "mig-3-"+time.Now().Format("150405.000000"))
		return kidOf(t, fresh) == edNext && algOf(t, fresh) == "EdDSA"
	})
	if err := verifyWithCachedJWKS(t, cached, fresh); err != nil {
		t.Errorf("a downstream with the JWKS cached before the switch refuses the EdDSA token: %v", err)
	}
	if err := verifyWithCachedJWKS(t, cached, old); err != nil {
		t.Errorf("a downstream with the cached JWKS refuses the ES256 token: %v", err)
	}
	verifyDownstream(t, s.URL, "https://auth.example.test", testAppID, old)
	if c := postJSON(t, s.URL+"/v1/session/check", old, nil); c.Status != 200 {
		t.Fatalf("the ES256 token after the switch: %d %s", c.Status, c.Body)
	}

	// Let the retired ES256 keys pass their retention, as time would.
	manifestPath := filepath.Join(f.keysDir, "keyset.json")
	raw, err := os.ReadFile(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range m["keys"].([]any) {
		if k := k.(map[string]any); k["state"] == "retired" && k["alg"] == "ES256" {
			k["retired"] = time.Now().Add(-24 * time.Hour).UTC().Format(time.RFC3339Nano)
		}
	}
	aged, _ := json.Marshal(m)
	if err := os.WriteFile(manifestPath+".new", aged, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(manifestPath+".new", manifestPath); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the ES256 token is refused once its key is past retention", func() bool {
		return postJSON(t, s.URL+"/v1/session/check", old, nil).Status == 401
	})
	if c := postJSON(t, s.URL+"/v1/session/check", fresh, nil); c.Status != 200 {
		t.Fatalf("the EdDSA token: %d %s", c.Status, c.Body)
	}
}
