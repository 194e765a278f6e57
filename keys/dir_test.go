package keys_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/keys"
)

// editManifest rewrites keyset.json through f, as an operator or a bug might.
func editManifest(t *testing.T, dir string, f func(keys []map[string]any) []map[string]any) {
	t.Helper()
	path := filepath.Join(dir, "keyset.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Version int              `json:"version"`
		Keys    []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m.Keys = f(m.Keys)
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestKIDIsTheRFC7638Thumbprint recomputes each signing kid by hand from the
// published members, in the order RFC 7638 section 3.2 prescribes.
func TestKIDIsTheRFC7638Thumbprint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		alg    string
		canon  func(k map[string]string) string
		expect map[string]string
	}{
		{"ES256", func(k map[string]string) string {
			return fmt.Sprintf(`{"crv":"%s","kty":"%s","x":"%s","y":"%s"}`, k["crv"], k["kty"], k["x"], k["y"])
		}, map[string]string{"kty": "EC", "crv": "P-256"}},
		{"EdDSA", func(k map[string]string) string {
			return fmt.Sprintf(`{"crv":"%s","kty":"%s","x":"%s"}`, k["crv"], k["kty"], k["x"])
		}, map[string]string{"kty": "OKP", "crv": "Ed25519"}},
		{"RS256", func(k map[string]string) string {
			return fmt.Sprintf(`{"e":"%s","kty":"%s","n":"%s"}`, k["e"], k["kty"], k["n"])
		}, map[string]string{"kty": "RSA", "e": "AQAB"}},
	}
	for _, tc := range tests {
		t.Run(tc.alg, func(t *testing.T) {
			t.Parallel()
			d, _ := newDir(t, tc.alg)
			body, _ := mustLoad(t, d).JWKS()
			var doc struct{ Keys []map[string]string }
			if err := json.Unmarshal(body, &doc); err != nil {
				t.Fatal(err)
			}
			for _, k := range doc.Keys {
				for member, want := range tc.expect {
					if k[member] != want {
						t.Errorf("%s = %q, want %q", member, k[member], want)
					}
				}
				sum := sha256.Sum256([]byte(tc.canon(k)))
				if want := base64.RawURLEncoding.EncodeToString(sum[:]); k["kid"] != want {
					t.Errorf("kid %s, thumbprint %s", k["kid"], want)
				}
				if _, err := os.Stat(filepath.Join(d.Path(), k["kid"]+".pem")); err != nil {
					t.Errorf("signing key file not named after its kid: %v", err)
				}
			}
		})
	}
}

func TestInitTouchesNothingWhenKeysExist(t *testing.T) {
	t.Parallel()
	d, _ := newDir(t, "ES256")
	lock := filepath.Join(d.Path(), ".lock")
	if err := os.Remove(lock); err != nil {
		t.Fatal(err)
	}
	if created, err := d.Init("RS256"); err != nil || created {
		t.Fatalf("Init over existing keys = %v, %v", created, err)
	}
	if _, err := os.Stat(lock); !errors.Is(err, os.ErrNotExist) {
		t.Error("Init over existing keys created the lock file")
	}
	// Concurrent first Inits on one directory make one key set.
	path := filepath.Join(t.TempDir(), "race")
	var wg sync.WaitGroup
	var made atomic.Int32
	for range 6 {
		wg.Go(func() {
			created, err := keys.NewDir(path, retention, nil).Init("EdDSA")
			if err != nil {
				t.Error(err)
			}
			if created {
				made.Add(1)
			}
		})
	}
	wg.Wait()
	if made.Load() != 1 {
		t.Errorf("%d concurrent Inits created keys, want 1", made.Load())
	}
	entries, _ := os.ReadDir(path)
	if len(entries) != 6 {
		t.Errorf("%d files after concurrent Inits, want 6", len(entries))
	}
}

func TestRotateWithoutNextPromotesAFreshKey(t *testing.T) {
	t.Parallel()
	d, _ := newDir(t, "RS256")
	before := mustLoad(t, d)
	editManifest(t, d.Path(), func(ks []map[string]any) []map[string]any {
		var out []map[string]any
		for _, k := range ks {
			if k["state"] != "next" {
				out = append(out, k)
			}
		}
		return out
	})
	if err := d.Rotate(false); err != nil {
		t.Fatal(err)
	}
	after := mustLoad(t, d)
	if after.SigningKey().KID == before.SigningKey().KID || after.EncryptionKey().KID == before.EncryptionKey().KID {
		t.Error("rotation without a next key did not change the active keys")
	}
	if after.SigningKey().Alg != "RS256" {
		t.Errorf("fresh key alg %s, want the active key's RS256", after.SigningKey().Alg)
	}
	for _, kind := range []keys.Kind{keys.Signing, keys.Encryption} {
		if n := kids(t, d, kind, keys.Next); len(n) != 1 {
			t.Errorf("%s next keys after rotation: %v", kind, n)
		}
	}
	list, _ := d.List()
	order := []string{}
	for _, k := range list {
		order = append(order, string(k.Kind)+"/"+string(k.State))
	}
	if got, want := strings.Join(order, " "),
		"signing/active signing/next signing/retired encryption/active encryption/next encryption/retired"; got != want {
		t.Errorf("List order %q, want %q", got, want)
	}
}

func TestLoadRefusesInconsistentManifests(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(ks []map[string]any) []map[string]any
	}{
		{"two active signing keys", func(ks []map[string]any) []map[string]any {
			for _, k := range ks {
				if k["kind"] == "signing" {
					k["state"] = "active"
				}
			}
			return ks
		}},
		{"no active encryption key", func(ks []map[string]any) []map[string]any {
			for _, k := range ks {
				if k["kind"] == "encryption" {
					k["state"] = "next"
				}
			}
			return ks
		}},
		{"retired without a time", func(ks []map[string]any) []map[string]any {
			for _, k := range ks {
				if k["state"] == "next" {
					k["state"] = "retired"
				}
			}
			return ks
		}},
		{"unknown state", func(ks []map[string]any) []map[string]any { ks[1]["state"] = "standby"; return ks }},
		{"unknown kind", func(ks []map[string]any) []map[string]any { ks[1]["kind"] = "mac"; return ks }},
		{"alg not fitting the key", func(ks []map[string]any) []map[string]any { ks[0]["alg"] = "RS256"; return ks }},
		{"kid with a dot", func(ks []map[string]any) []map[string]any { ks[3]["kid"] = "a.b"; return ks }},
		{"file outside the directory", func(ks []map[string]any) []map[string]any {
			ks[0]["file"] = "../" + ks[0]["file"].(string)
			return ks
		}},
		{"duplicate key", func(ks []map[string]any) []map[string]any {
			dup := map[string]any{}
			for k, v := range ks[1] {
				dup[k] = v
			}
			return append(ks, dup)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, _ := newDir(t, "ES256")
			editManifest(t, d.Path(), tc.edit)
			if _, err := d.Load(); err == nil {
				t.Error("loaded an inconsistent manifest")
			} else if errors.Is(err, keys.ErrNoKeys) {
				t.Errorf("inconsistent manifest reported as ErrNoKeys: %v", err)
			}
		})
	}
}

// TestLoadDuringRotationNeverFails: the manifest is renamed into place after
// the key files exist, so a reader never sees a half-made directory.
func TestLoadDuringRotationNeverFails(t *testing.T) {
	t.Parallel()
	d, _ := newDir(t, "ES256")
	reader := keys.NewDir(d.Path(), 24*time.Hour, nil)
	done := make(chan struct{})
	var failures, loads int
	go func() {
		defer close(done)
		for {
			if _, err := reader.Load(); err != nil {
				failures++
				t.Errorf("Load during rotation: %v", err)
			}
			loads++
			if _, err := os.Stat(filepath.Join(d.Path(), ".stop")); err == nil {
				return
			}
		}
	}()
	for i := 0; i < 15; i++ {
		if err := d.Rotate(false); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(d.Path(), ".stop"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	<-done
	if failures > 0 || loads == 0 {
		t.Errorf("%d of %d loads failed", failures, loads)
	}
}

// The two-process test re-executes the test binary as a helper that calls
// RotateIfDue once, at a shared start time, and prints whether it rotated.
const helperEnv = "WXTOKEN_KEYS_ROTATE_HELPER"

func TestRotateIfDueHelperProcess(t *testing.T) {
	t.Parallel()
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("helper process for TestRotateIfDueAcrossProcesses")
	}
	parts := strings.Split(spec, "|")
	if len(parts) != 3 {
		fmt.Println("error: bad spec", spec)
		os.Exit(2)
	}
	path := parts[0]
	now, err := time.Parse(time.RFC3339Nano, parts[1])
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	// Start together, so the processes really race for the lock.
	start, err := time.Parse(time.RFC3339Nano, parts[2])
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	time.Sleep(time.Until(start))
	rotated, err := keys.NewDir(path, retention, func() time.Time { return now }).RotateIfDue(time.Hour)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	fmt.Println("rotated:", rotated)
	os.Exit(0)
}

func TestRotateIfDueAcrossProcesses(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts processes")
	}
	d, clk := newDir(t, "ES256")
	clk.add(time.Hour)
	start := time.Now().Add(time.Second).Format(time.RFC3339Nano)
	spec := d.Path() + "|" + clk.now().Format(time.RFC3339Nano) + "|" + start
	const procs = 4
	outs := make([]string, procs)
	var wg sync.WaitGroup
	for i := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^TestRotateIfDueHelperProcess$", "-test.count=1")
			cmd.Env = append(os.Environ(), helperEnv+"="+spec)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("helper %d: %v\n%s", i, err, out)
			}
			outs[i] = string(out)
		}()
	}
	wg.Wait()
	rotations := 0
	for _, out := range outs {
		rotations += strings.Count(out, "rotated: true")
	}
	if rotations != 1 {
		t.Errorf("%d rotations across %d processes, want 1:\n%s", rotations, procs, strings.Join(outs, "\n"))
	}
	if got := kids(t, d, keys.Signing, keys.Retired); len(got) != 1 {
		t.Errorf("retired signing keys = %v, want 1", got)
	}
}

func TestCheckPermissionsFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		target func(d *keys.Dir) string
		mode   os.FileMode
		expect string
	}{
		{"signing key 0644", func(d *keys.Dir) string { return firstMatch(d, "*.pem") }, 0o644, "key file"},
		{"encryption key 0604", func(d *keys.Dir) string { return firstMatch(d, "enc-*.jwk") }, 0o604, "key file"},
		{"manifest 0604", func(d *keys.Dir) string { return filepath.Join(d.Path(), "keyset.json") }, 0o604, "manifest"},
		{"manifest writable 0620", func(d *keys.Dir) string { return filepath.Join(d.Path(), "keyset.json") }, 0o620, "manifest"},
		{"directory 0755", func(d *keys.Dir) string { return d.Path() }, 0o755, "keys directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, _ := newDir(t, "ES256")
			p := tc.target(d)
			if err := os.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			w := d.CheckPermissions()
			mode := fmt.Sprintf("(mode %04o)", tc.mode)
			if len(w) != 1 || !strings.HasPrefix(w[0], tc.expect+" "+p+" ") || !strings.Contains(w[0], mode) ||
				strings.Contains(w[0], "\n") {
				t.Errorf("warnings = %q, want one %q line naming %s %s", w, tc.expect, p, mode)
			}
		})
	}
}

func firstMatch(d *keys.Dir, pattern string) string {
	m, _ := filepath.Glob(filepath.Join(d.Path(), pattern))
	if len(m) == 0 {
		return filepath.Join(d.Path(), "missing")
	}
	return m[0]
}

const fsizeHelperEnv = "WXTOKEN_KEYS_FSIZE_HELPER"

// TestInitUnderFileSizeLimitHelperProcess is the child of
// TestFailedWritesAreNeverRenamedIntoPlace: with files capped at 64 bytes
// (writes past that fail with EFBIG; Go ignores SIGXFSZ) it runs keys init.
func TestInitUnderFileSizeLimitHelperProcess(t *testing.T) {
	dir := os.Getenv(fsizeHelperEnv)
	if dir == "" {
		return
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: 64, Max: 64}); err != nil {
		fmt.Println("setrlimit:", err)
		os.Exit(3)
	}
	_, err := keys.NewDir(dir, retention, nil).Init(keys.ES256)
	fmt.Println("init error:", err)
	os.Exit(0)
}

// TestFailedWritesAreNeverRenamedIntoPlace: a key file that cannot be
// written whole (a full disk, a quota) fails keys init; nothing truncated
// is left under a key file's name.
func TestFailedWritesAreNeverRenamedIntoPlace(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a process")
	}
	dir := filepath.Join(t.TempDir(), "keys")
	cmd := exec.Command(os.Args[0], "-test.run=^TestInitUnderFileSizeLimitHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), fsizeHelperEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "init error: keys: write") {
		t.Fatalf("keys init with every write failing: %s", out)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			t.Errorf("%s (%d bytes) was left in place by a failed write", e.Name(), info.Size())
		}
	}
}
