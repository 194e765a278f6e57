package keys_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wxtoken/wxtoken/keys"
)

const retention = 3 * time.Hour

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newDir(t *testing.T, alg string) (*keys.Dir, *clock) {
	t.Helper()
	clk := &clock{t: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	d := keys.NewDir(filepath.Join(t.TempDir(), "keys"), retention, clk.now)
	created, err := d.Init(alg)
	if err != nil || !created {
		t.Fatalf("Init = %v, %v", created, err)
	}
	return d, clk
}

func kids(t *testing.T, d *keys.Dir, kind keys.Kind, state keys.State) []string {
	t.Helper()
	list, err := d.List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range list {
		if k.Kind == kind && k.State == state {
			out = append(out, k.KID)
		}
	}
	return out
}

func mustLoad(t *testing.T, d *keys.Dir) *keys.Ring {
	t.Helper()
	r, err := d.Load()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestInitModesAndIdempotence(t *testing.T) {
	t.Parallel()
	d, _ := newDir(t, "ES256")
	st, err := os.Stat(d.Path())
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v, %v", st.Mode().Perm(), err)
	}
	entries, _ := os.ReadDir(d.Path())
	before := map[string][]byte{}
	for _, e := range entries {
		fi, _ := e.Info()
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", e.Name(), fi.Mode().Perm())
		}
		b, _ := os.ReadFile(filepath.Join(d.Path(), e.Name()))
		before[e.Name()] = b
	}
	if n := len(before); n != 6 { // manifest, 2 pem, 2 jwk, lock
		t.Errorf("%d files after init, want 6", n)
	}
	for _, kind := range []keys.Kind{keys.Signing, keys.Encryption} {
		for _, state := range []keys.State{keys.Active, keys.Next} {
			if got := kids(t, d, kind, state); len(got) != 1 {
				t.Errorf("%s %s: %v", kind, state, got)
			}
		}
	}
	created, err := d.Init("ES256")
	if err != nil || created {
		t.Fatalf("second Init = %v, %v", created, err)
	}
	for name, b := range before {
		if after, _ := os.ReadFile(filepath.Join(d.Path(), name)); !bytes.Equal(after, b) {
			t.Errorf("%s changed", name)
		}
	}
	if _, err := keys.NewDir(t.TempDir(), retention, nil).Init("HS256"); err == nil {
		t.Error("Init accepted HS256")
	}
}

func TestEachAlgorithmSignsAndPublishes(t *testing.T) {
	t.Parallel()
	for _, alg := range []string{"ES256", "EdDSA", "RS256"} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			d, _ := newDir(t, alg)
			r := mustLoad(t, d)
			sk := r.SigningKey()
			if sk.Alg != alg || r.Algorithms()[0] != alg {
				t.Fatalf("alg %s, algorithms %v", sk.Alg, r.Algorithms())
			}
			signing := "header.payload"
			sig, err := sk.Sign(signing)
			if err != nil {
				t.Fatal(err)
			}
			pub, ok := r.VerificationKey(sk.KID)
			if !ok {
				t.Fatal("active key not a verification key")
			}
			switch p := pub.Public.(type) {
			case *ecdsa.PublicKey:
			case ed25519.PublicKey:
			case *rsa.PublicKey:
				if p.N.BitLen() < 2048 {
					t.Errorf("RSA key of %d bits", p.N.BitLen())
				}
			default:
				t.Fatalf("public key %T", p)
			}
			if err := jwt.GetSigningMethod(alg).Verify(signing, sig, pub.Public); err != nil {
				t.Errorf("signature does not verify: %v", err)
			}
			pemFile, err := os.ReadFile(filepath.Join(d.Path(), sk.KID+".pem"))
			if err != nil || !bytes.HasPrefix(pemFile, []byte("-----BEGIN PRIVATE KEY-----")) {
				t.Errorf("signing key file is not PKCS#8 PEM: %v", err)
			}

			body, etag := r.JWKS()
			var doc struct{ Keys []map[string]any }
			if err := json.Unmarshal(body, &doc); err != nil {
				t.Fatal(err)
			}
			if len(doc.Keys) != 2 || doc.Keys[0]["kid"] != sk.KID || !strings.HasPrefix(etag, `"`) {
				t.Errorf("JWKS %s etag %s", body, etag)
			}
			for _, k := range doc.Keys {
				if k["use"] != "sig" || k["alg"] != alg {
					t.Errorf("jwk %v", k)
				}
				for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "k"} {
					if _, ok := k[private]; ok {
						t.Errorf("JWKS leaks %q", private)
					}
				}
			}
		})
	}
}

func TestSealOpen(t *testing.T) {
	t.Parallel()
	d, _ := newDir(t, "ES256")
	r := mustLoad(t, d)
	k := r.EncryptionKey()
	ad := []byte("bound")
	sealed, err := k.Seal([]byte("tiihtNczf5v6AKRyjwEUhQ=="), ad)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := k.Seal([]byte("tiihtNczf5v6AKRyjwEUhQ=="), ad); bytes.Equal(again, sealed) {
		t.Error("two seals are equal: the nonce is not fresh")
	}
	if plain, err := k.Open(sealed, ad); err != nil || string(plain) != "tiihtNczf5v6AKRyjwEUhQ==" {
		t.Fatalf("Open = %q, %v", plain, err)
	}
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1
	tests := map[string]struct {
		sealed, ad []byte
	}{
		"other ad":   {sealed, []byte("other")},
		"bit flip":   {flipped, ad},
		"truncated":  {sealed[:len(sealed)-1], ad},
		"too short":  {sealed[:5], ad},
		"empty":      {nil, ad},
		"nonce only": {sealed[:12], ad},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := k.Open(tc.sealed, tc.ad); err == nil {
				t.Error("opened")
			}
		})
	}
	ek, _ := os.ReadFile(filepath.Join(d.Path(), "enc-"+k.KID+".jwk"))
	var jwk map[string]string
	if json.Unmarshal(ek, &jwk) != nil || jwk["kty"] != "oct" || jwk["alg"] != "A256GCM" || jwk["kid"] != k.KID {
		t.Errorf("encryption key file is not an oct JWK")
	}
}

func TestRotateLifecycle(t *testing.T) {
	t.Parallel()
	d, clk := newDir(t, "EdDSA")
	r0 := mustLoad(t, d)
	oldSig, oldEnc := r0.SigningKey().KID, r0.EncryptionKey().KID
	sealed, _ := r0.EncryptionKey().Seal([]byte("sk"), nil)
	next := kids(t, d, keys.Signing, keys.Next)[0]
	nextEnc := kids(t, d, keys.Encryption, keys.Next)[0]
	if _, ok := r0.VerificationKey(next); !ok {
		t.Error("the next signing key is not published before it signs")
	}
	if _, ok := r0.DecryptionKey(nextEnc); !ok {
		t.Error("the next encryption key is not loaded before it seals")
	}

	clk.add(time.Hour)
	if err := d.Rotate(false); err != nil {
		t.Fatal(err)
	}
	r1 := mustLoad(t, d)
	if r1.SigningKey().KID != next || r1.EncryptionKey().KID != nextEnc {
		t.Fatal("the next keys did not become active")
	}
	if got := kids(t, d, keys.Signing, keys.Retired); len(got) != 1 || got[0] != oldSig {
		t.Errorf("retired signing = %v", got)
	}
	if _, ok := r1.VerificationKey(oldSig); !ok {
		t.Error("the retired signing key left the JWKS before its tokens expired")
	}
	if k, ok := r1.DecryptionKey(oldEnc); !ok {
		t.Error("the retired encryption key cannot decrypt")
	} else if p, err := k.Open(sealed, nil); err != nil || string(p) != "sk" {
		t.Error("old sealed data does not open after rotation")
	}
	if body, _ := r1.JWKS(); bytes.Count(body, []byte(`"kid"`)) != 3 {
		t.Errorf("JWKS should hold active, next and retired: %s", body)
	}
	list, _ := d.List()
	for _, k := range list {
		if k.State == keys.Retired && (k.PruneAfter == nil || !k.PruneAfter.Equal(clk.now().Add(retention))) {
			t.Errorf("retired key prune-after = %v", k.PruneAfter)
		}
	}

	// Nothing to prune yet; past retention the retired keys leave the
	// ring by themselves and prune deletes them.
	if pruned, err := d.Prune(); err != nil || len(pruned) != 0 {
		t.Fatalf("early prune = %v, %v", pruned, err)
	}
	clk.add(retention)
	r2 := mustLoad(t, d)
	if _, ok := r2.VerificationKey(oldSig); ok {
		t.Error("a retired key past retention is still published")
	}
	if _, ok := r2.DecryptionKey(oldEnc); ok {
		t.Error("a retired key past retention still decrypts")
	}
	pruned, err := d.Prune()
	if err != nil || len(pruned) != 2 {
		t.Fatalf("prune = %v, %v", pruned, err)
	}
	if _, err := os.Stat(filepath.Join(d.Path(), oldSig+".pem")); !errors.Is(err, os.ErrNotExist) {
		t.Error("pruned key file still there")
	}
}

func TestEmergencyRotationDropsEverything(t *testing.T) {
	t.Parallel()
	d, _ := newDir(t, "ES256")
	r0 := mustLoad(t, d)
	old, _ := d.List()
	if err := d.Rotate(true); err != nil {
		t.Fatal(err)
	}
	r1 := mustLoad(t, d)
	for _, k := range old {
		if _, ok := r1.VerificationKey(k.KID); ok {
			t.Errorf("%s still verifies", k.KID)
		}
		if _, ok := r1.DecryptionKey(k.KID); ok {
			t.Errorf("%s still decrypts", k.KID)
		}
	}
	if r1.SigningKey().KID == r0.SigningKey().KID {
		t.Error("the signing key did not change")
	}
	entries, _ := os.ReadDir(d.Path())
	if len(entries) != 6 {
		t.Errorf("%d files after --now, want 6 (old files deleted)", len(entries))
	}
	if got := kids(t, d, keys.Signing, keys.Retired); len(got) != 0 {
		t.Errorf("retired after --now: %v", got)
	}
}

// TestRotateIfDueRotatesOncePerPeriod: many callers on one directory, each
// with its own Dir (its own lock file description), make one rotation.
func TestRotateIfDueRotatesOncePerPeriod(t *testing.T) {
	t.Parallel()
	d, clk := newDir(t, "ES256")
	if rotated, err := d.RotateIfDue(time.Hour); err != nil || rotated {
		t.Fatalf("rotated before the period: %v %v", rotated, err)
	}
	clk.add(time.Hour)
	var wg sync.WaitGroup
	var count atomic.Int32
	for range 8 {
		wg.Go(func() {
			rotated, err := keys.NewDir(d.Path(), retention, clk.now).RotateIfDue(time.Hour)
			if err != nil {
				t.Error(err)
			}
			if rotated {
				count.Add(1)
			}
		})
	}
	wg.Wait()
	if count.Load() != 1 {
		t.Errorf("%d rotations, want 1", count.Load())
	}
	if got := kids(t, d, keys.Signing, keys.Retired); len(got) != 1 {
		t.Errorf("retired = %v", got)
	}
}

func TestLoadRefusesBrokenDirectories(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		corrupt func(t *testing.T, dir string)
	}{
		{"no manifest", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "keyset.json")) }},
		{"truncated manifest", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "keyset.json"), []byte(`{"version":1,"keys":[{"kid":"tru`), 0o600)
		}},
		{"key file missing", func(t *testing.T, dir string) {
			matches, _ := filepath.Glob(filepath.Join(dir, "*.pem"))
			os.Remove(matches[0])
		}},
		{"key file corrupt", func(t *testing.T, dir string) {
			matches, _ := filepath.Glob(filepath.Join(dir, "*.jwk"))
			os.WriteFile(matches[0], []byte("{}"), 0o600)
		}},
		{"key swapped under a kid", func(t *testing.T, dir string) {
			matches, _ := filepath.Glob(filepath.Join(dir, "*.pem"))
			b, _ := os.ReadFile(matches[1])
			os.WriteFile(matches[0], b, 0o600)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, _ := newDir(t, "ES256")
			tc.corrupt(t, d.Path())
			if _, err := d.Load(); err == nil {
				t.Error("loaded a broken directory")
			}
		})
	}
	if _, err := keys.NewDir(filepath.Join(t.TempDir(), "none"), retention, nil).Load(); !errors.Is(err, keys.ErrNoKeys) {
		t.Errorf("missing directory: %v, want ErrNoKeys", err)
	}
}

func TestStoreKeepsLastGoodKeys(t *testing.T) {
	t.Parallel()
	d, _ := newDir(t, "ES256")
	var logs bytes.Buffer
	s, err := keys.NewStore(d, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	good := s.Current()
	manifest := filepath.Join(d.Path(), "keyset.json")
	saved, _ := os.ReadFile(manifest)
	os.WriteFile(manifest, []byte(`{"version":1,"keys":[{"kid":"tru`), 0o600)
	if err := s.Reload(); err == nil {
		t.Fatal("reload of a corrupt directory succeeded")
	}
	if s.Current() != good {
		t.Error("a failed reload replaced the ring")
	}
	if !strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Errorf("no error logged: %s", logs.String())
	}
	os.WriteFile(manifest, saved, 0o600)
	if err := d.Rotate(false); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil || s.Current().SigningKey().KID == good.SigningKey().KID {
		t.Fatalf("reload after rotation: %v", err)
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "PRIVATE") || strings.Contains(line, `"k":`) {
			t.Errorf("key material in logs: %s", line)
		}
	}
}

func TestStoreWatchPicksUpChanges(t *testing.T) {
	t.Parallel()
	d, _ := newDir(t, "ES256")
	s, err := keys.NewStore(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := s.Current().SigningKey().KID
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Watch(ctx, 20*time.Millisecond)
	if err := d.Rotate(false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for s.Current().SigningKey().KID == before {
		if time.Now().After(deadline) {
			t.Fatal("Watch did not pick up the rotation")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCheckPermissions(t *testing.T) {
	t.Parallel()
	d, _ := newDir(t, "ES256")
	if w := d.CheckPermissions(); len(w) != 0 {
		t.Errorf("fresh directory warnings: %v", w)
	}
	matches, _ := filepath.Glob(filepath.Join(d.Path(), "*.pem"))
	os.Chmod(matches[0], 0o644)
	w := d.CheckPermissions()
	if len(w) != 1 || !strings.Contains(w[0], "0644") || !strings.Contains(w[0], filepath.Base(matches[0])) {
		t.Errorf("warnings = %v", w)
	}
}

func BenchmarkSealOpen(b *testing.B) {
	d := keys.NewDir(filepath.Join(b.TempDir(), "keys"), retention, nil)
	if _, err := d.Init("ES256"); err != nil {
		b.Fatal(err)
	}
	r, err := d.Load()
	if err != nil {
		b.Fatal(err)
	}
	k := r.EncryptionKey()
	ad := []byte("wxtoken/session-key/v1|iss|aud|sub|jti")
	b.ReportAllocs()
	for b.Loop() {
		s, _ := k.Seal([]byte("tiihtNczf5v6AKRyjwEUhQ=="), ad)
		if _, err := k.Open(s, ad); err != nil {
			b.Fatal(err)
		}
	}
}
