package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Kind says what a key is for.
type Kind string

// The two kinds of keys.
const (
	Signing    Kind = "signing"
	Encryption Kind = "encryption"
)

// State is where a key is in its life.
type State string

// A key's life: next → active → retired → gone.
const (
	Next    State = "next"
	Active  State = "active"
	Retired State = "retired"
)

// Algorithms for signing keys, and the one for encryption keys.
const (
	ES256   = "ES256"
	EdDSA   = "EdDSA"
	RS256   = "RS256"
	A256GCM = "A256GCM"
)

// rsaBits is the size of new RSA keys (RFC 7518 asks for 2048 or more).
const rsaBits = 2048

// ManifestFile is the name of the manifest, the directory's commit point.
const ManifestFile = "keyset.json"

const lockFile = ".lock"

// ErrNoKeys means the directory holds no keys yet: run 'wxtoken keys init'.
var ErrNoKeys = errors.New("keys: no keys in the directory")

// Dir is a keys directory on disk.
type Dir struct {
	path string
	now  func() time.Time
	// read reads a file of the directory with a size cap: readCapped. A
	// field so a test can stand in for a hung network file system, the one
	// way a read blocks that a test cannot make for real.
	read func(path string, limit int64) ([]byte, fs.FileInfo, error)
}

// NewDir returns the keys directory at path; now may be nil (time.Now).
func NewDir(path string, now func() time.Time) *Dir {
	if now == nil {
		now = time.Now
	}
	return &Dir{path: path, now: now, read: readCapped}
}

// Path is the directory's path.
func (d *Dir) Path() string { return d.path }

// entry is one key in the manifest.
type entry struct {
	KID       string     `json:"kid"`
	Kind      Kind       `json:"kind"`
	Alg       string     `json:"alg"`
	State     State      `json:"state"`
	File      string     `json:"file"`
	Created   time.Time  `json:"created"`
	Activated *time.Time `json:"activated,omitempty"`
	Retired   *time.Time `json:"retired,omitempty"`
}

type manifest struct {
	Version int     `json:"version"`
	Keys    []entry `json:"keys"`
}

// KeyInfo describes a key for listings; it carries no key material.
type KeyInfo struct {
	KID       string
	Kind      Kind
	Alg       string
	State     State
	Created   time.Time
	Activated *time.Time
	Retired   *time.Time
	// PruneAfter is when a retired key can go: retired + retention.
	PruneAfter *time.Time
}

// Init creates the directory with an active and a next key of each kind.
// A directory that already has a manifest is left exactly as it is.
func (d *Dir) Init(alg string) (created bool, err error) {
	if !validAlg(alg) {
		return false, fmt.Errorf("keys: unknown signing algorithm %q (use ES256, EdDSA or RS256)", alg)
	}
	// Keys already there: touch nothing, not even the lock file, so a
	// read-only mount (a Kubernetes Secret) answers too.
	if exists, err := d.hasManifest(); err != nil || exists {
		return false, err
	}
	if _, err := os.Stat(d.path); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(d.path, 0o700); err != nil {
			return false, fmt.Errorf("keys: create directory: %w", err)
		}
		if err := os.Chmod(d.path, 0o700); err != nil {
			return false, fmt.Errorf("keys: create directory: %w", err)
		}
	}
	unlock, err := d.lock()
	if err != nil {
		return false, err
	}
	defer unlock()
	// Another process may have initialized it while we waited.
	if exists, err := d.hasManifest(); err != nil || exists {
		return false, err
	}
	now := d.now().UTC()
	m := manifest{Version: 1}
	for _, k := range []Kind{Signing, Encryption} {
		for _, state := range []State{Active, Next} {
			e, err := d.newKey(k, alg, state, now)
			if err != nil {
				d.remove(m.Keys)
				return false, err
			}
			m.Keys = append(m.Keys, e)
		}
	}
	if err := d.writeManifest(m); err != nil {
		d.remove(m.Keys)
		return false, err
	}
	return true, nil
}

// hasManifest reports whether keyset.json exists; an error other than
// "not there" is returned so Init never overwrites keys it cannot see.
func (d *Dir) hasManifest() (bool, error) {
	_, err := os.Stat(filepath.Join(d.path, ManifestFile))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("keys: check manifest: %w", err)
	}
}

// Rotate moves every kind one step: next → active, active → retired, and a
// fresh next. emergency instead replaces every key with fresh ones and
// deletes the old, so tokens they made stop working at once.
func (d *Dir) Rotate(emergency bool) error { return d.RotateTo("", emergency) }

// RotateTo is Rotate with the signing algorithm of the fresh keys: the
// new next signing key (with emergency, every new signing key) is of alg,
// so moving to another algorithm gets the same pre-publication as any
// rotation; the old algorithm's keys keep verifying until they are gone.
// An empty alg keeps the algorithm of the current next key.
func (d *Dir) RotateTo(alg string, emergency bool) error {
	if alg != "" && !validAlg(alg) {
		return fmt.Errorf("keys: unknown signing algorithm %q (use ES256, EdDSA or RS256)", alg)
	}
	unlock, err := d.lock()
	if err != nil {
		return err
	}
	defer unlock()
	m, err := d.readManifest()
	if err != nil {
		return err
	}
	return d.rotateLocked(m, emergency, alg)
}

// RotateIfDue rotates when the active signing key has been active for
// every or longer. Replicas sharing the directory may all call it: the lock
// and the re-read manifest make exactly one of them rotate per period.
func (d *Dir) RotateIfDue(every time.Duration) (bool, error) {
	unlock, err := d.lock()
	if err != nil {
		return false, err
	}
	defer unlock()
	m, err := d.readManifest()
	if err != nil {
		return false, err
	}
	since := time.Time{}
	for _, e := range m.Keys {
		if e.Kind == Signing && e.State == Active {
			since = e.Created
			if e.Activated != nil {
				since = *e.Activated
			}
		}
	}
	if d.now().Sub(since) < every {
		return false, nil
	}
	return true, d.rotateLocked(m, false, "")
}

// rotateLocked rotates m; alg, when set, is the algorithm of the fresh
// signing keys, and otherwise the one the directory is moving to: the next
// key's (a migration started by 'rotate --alg' carries on), else the
// active key's.
func (d *Dir) rotateLocked(m manifest, emergency bool, alg string) (err error) {
	var fresh []entry // files this rotation wrote; deleted again if it fails
	defer func() {
		if err != nil {
			d.remove(fresh)
		}
	}()
	newKey := func(k Kind, alg string, state State, now time.Time) (entry, error) {
		e, err := d.newKey(k, alg, state, now)
		if err == nil {
			fresh = append(fresh, e)
		}
		return e, err
	}
	now := d.now().UTC()
	if alg == "" {
		alg = ES256
		for _, e := range m.Keys {
			if e.Kind == Signing && e.State == Active {
				alg = e.Alg
			}
		}
		for _, e := range m.Keys {
			if e.Kind == Signing && e.State == Next && validAlg(e.Alg) {
				alg = e.Alg
				break // the one that becomes active
			}
		}
	}
	var out []entry
	var drop []entry
	for _, k := range []Kind{Signing, Encryption} {
		if emergency {
			a, err := newKey(k, alg, Active, now)
			if err != nil {
				return err
			}
			n, err := newKey(k, alg, Next, now)
			if err != nil {
				return err
			}
			out = append(out, a, n)
			continue
		}
		var next *entry
		var rest []entry
		for _, e := range m.Keys {
			if e.Kind != k {
				continue
			}
			switch e.State {
			case Next:
				e := e
				if next == nil {
					next = &e
				} else {
					drop = append(drop, e)
				}
			case Active:
				t := now
				e.State, e.Retired = Retired, &t
				rest = append(rest, e)
			default:
				rest = append(rest, e)
			}
		}
		if next == nil {
			n, err := newKey(k, alg, Next, now)
			if err != nil {
				return err
			}
			next = &n
		}
		t := now
		next.State, next.Activated = Active, &t
		successor, err := newKey(k, alg, Next, now)
		if err != nil {
			return err
		}
		out = append(out, *next, successor)
		out = append(out, rest...)
	}
	if emergency {
		drop = m.Keys
	}
	if err := d.writeManifest(manifest{Version: 1, Keys: out}); err != nil {
		return err
	}
	d.remove(drop)
	// Tidy what an earlier, interrupted change left behind; the rotation
	// itself is done, so failing at this only leaves them for prune.
	_, _ = d.removeStrays(out)
	return nil
}

// Prune deletes retired keys whose tokens have all expired
// (retired + retention is past).
func (d *Dir) Prune(retention time.Duration) ([]KeyInfo, error) {
	unlock, err := d.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	m, err := d.readManifest()
	if err != nil {
		return nil, err
	}
	now := d.now()
	var keep, drop []entry
	for _, e := range m.Keys {
		if expired(e, retention, now) {
			drop = append(drop, e)
		} else {
			keep = append(keep, e)
		}
	}
	if len(drop) == 0 {
		return nil, nil
	}
	if err := d.writeManifest(manifest{Version: 1, Keys: keep}); err != nil {
		return nil, err
	}
	d.remove(drop)
	return infos(drop, retention), nil
}

// List describes every key in the manifest.
func (d *Dir) List(retention time.Duration) ([]KeyInfo, error) {
	m, err := d.readManifest()
	if err != nil {
		return nil, err
	}
	return infos(m.Keys, retention), nil
}

func infos(es []entry, retention time.Duration) []KeyInfo {
	out := make([]KeyInfo, 0, len(es))
	for _, e := range es {
		k := KeyInfo{KID: e.KID, Kind: e.Kind, Alg: e.Alg, State: e.State, Created: e.Created,
			Activated: e.Activated, Retired: e.Retired}
		if e.State == Retired && e.Retired != nil {
			t := e.Retired.Add(retention)
			k.PruneAfter = &t
		}
		out = append(out, k)
	}
	return out
}

// expired reports whether e is a retired key past its retention.
func expired(e entry, retention time.Duration, now time.Time) bool {
	return e.State == Retired && e.Retired != nil && !now.Before(e.Retired.Add(retention))
}

// CheckPermissions warns about key files or a directory that others can
// read, or that belong to neither the serving user nor root. It names
// files, modes and owners, never contents. (Writable by group or others is
// worse: Load refuses that, see ErrUnsafePermissions.)
func (d *Dir) CheckPermissions() []string {
	var out []string
	if st, err := os.Stat(d.path); err == nil {
		// On a read-only mount (a Kubernetes Secret volume is 1777 there)
		// the directory's bits let others list key names at most.
		if st.Mode().Perm()&0o077 != 0 && !readOnlyFS(d.path) {
			out = append(out, fmt.Sprintf("keys directory %s is open to group or others (mode %04o); run: chmod 700 %s",
				d.path, st.Mode().Perm(), d.path))
		}
		if w := ownerWarning("keys directory", d.path, st); w != "" {
			out = append(out, w)
		}
	}
	entries, err := os.ReadDir(d.path)
	if err != nil {
		return out
	}
	for _, e := range entries {
		// Dot names are ours (.lock, .tmp-*) or a Kubernetes Secret mount's
		// own (..data and its timestamped directories).
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(d.path, e.Name())
		st, err := os.Stat(p)
		if err != nil {
			continue
		}
		what := "key file"
		if e.Name() == ManifestFile {
			what = "manifest"
		}
		if st.Mode().Perm()&0o077 != 0 && !ownGroupOnly(st) {
			out = append(out, fmt.Sprintf("%s %s is readable by group or others (mode %04o); run: chmod 600 %s",
				what, p, st.Mode().Perm(), p))
		}
		if w := ownerWarning(what, p, st); w != "" {
			out = append(out, w)
		}
	}
	return out
}

// ownGroupOnly reports whether st is readable by its group only, and that group
// is one of the serving process's own: what Kubernetes makes of a Secret
// mounted for a non-root pod (fsGroup), which is no exposure to warn about.
func ownGroupOnly(st fs.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || st.Mode().Perm()&0o027 != 0 {
		return false
	}
	if int(sys.Gid) == os.Getegid() {
		return true
	}
	groups, err := os.Getgroups()
	return err == nil && slices.Contains(groups, int(sys.Gid))
}

// lock takes the directory's exclusive flock, so two processes never
// interleave changes.
func (d *Dir) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(d.path, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w (%s)", ErrNoKeys, d.path)
	}
	if err != nil {
		return nil, fmt.Errorf("keys: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("keys: lock: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	}, nil
}

func (d *Dir) readManifest() (manifest, error) {
	b, _, err := d.readManifestFile()
	if err != nil {
		return manifest{}, err
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return manifest{}, fmt.Errorf("keys: %s is corrupt: %w", ManifestFile, err)
	}
	if m.Version != 1 {
		return manifest{}, fmt.Errorf("keys: %s: unknown version %d", ManifestFile, m.Version)
	}
	return m, nil
}

func (d *Dir) writeManifest(m manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("keys: encode manifest: %w", err)
	}
	return writeAtomic(filepath.Join(d.path, ManifestFile), append(b, '\n'))
}

// remove deletes the files of keys no longer in the manifest. A failure
// only leaves a stray file behind; the manifest already decides.
func (d *Dir) remove(es []entry) {
	for _, e := range es {
		if e.File != "" && filepath.Base(e.File) == e.File {
			_ = os.Remove(filepath.Join(d.path, e.File))
		}
	}
}

// writeAtomic writes a file 0600 under a temporary name, syncs it and
// renames it into place: a reader sees the old file or the new, never half.
func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), tmpPrefix+"*")
	if err != nil {
		return fmt.Errorf("keys: write %s: %w", filepath.Base(path), err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err == nil {
		if _, err = f.Write(data); err == nil {
			err = f.Sync()
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("keys: write %s: %w", filepath.Base(path), err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("keys: write %s: %w", filepath.Base(path), err)
	}
	// Make the rename itself durable; best effort, as some file systems
	// refuse to sync a directory.
	if dir, err := os.Open(filepath.Dir(path)); err == nil {
		_ = dir.Sync()
		_ = dir.Close()
	}
	return nil
}

func validAlg(alg string) bool { return alg == ES256 || alg == EdDSA || alg == RS256 }

// newKey makes a key of kind k and writes its file; the caller adds the
// returned entry to the manifest.
func (d *Dir) newKey(k Kind, alg string, state State, now time.Time) (entry, error) {
	e := entry{Kind: k, State: state, Created: now}
	if state == Active {
		t := now
		e.Activated = &t
	}
	var data []byte
	switch k {
	case Signing:
		priv, err := generate(alg)
		if err != nil {
			return entry{}, err
		}
		kid, err := thumbprint(priv.Public())
		if err != nil {
			return entry{}, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return entry{}, fmt.Errorf("keys: encode key: %w", err)
		}
		data = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		e.KID, e.Alg, e.File = kid, alg, kid+".pem"
	case Encryption:
		var raw, id [32]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return entry{}, err
		}
		if _, err := rand.Read(id[:16]); err != nil {
			return entry{}, err
		}
		e.KID, e.Alg = base64.RawURLEncoding.EncodeToString(id[:16]), A256GCM
		e.File = "enc-" + e.KID + ".jwk"
		b, err := json.MarshalIndent(octJWK{Kty: "oct", KID: e.KID, Alg: A256GCM, Use: "enc",
			K: base64.RawURLEncoding.EncodeToString(raw[:])}, "", "  ")
		if err != nil {
			return entry{}, err
		}
		data = append(b, '\n')
	}
	if err := writeAtomic(filepath.Join(d.path, e.File), data); err != nil {
		return entry{}, err
	}
	return e, nil
}

// octJWK is an encryption key's file: a JWK (RFC 7517) of kty "oct".
type octJWK struct {
	Kty string `json:"kty"`
	KID string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	K   string `json:"k"`
}

func generate(alg string) (crypto.Signer, error) {
	switch alg {
	case ES256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case EdDSA:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case RS256:
		return rsa.GenerateKey(rand.Reader, rsaBits)
	}
	return nil, fmt.Errorf("keys: unknown signing algorithm %q", alg)
}
