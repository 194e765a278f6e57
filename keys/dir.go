package keys

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Dir is a keys directory on disk.
type Dir struct {
	path string
	// retention is how long a retired key stays usable after it retired:
	// the longest a token it signed or sealed can live. Load leaves out,
	// List dates and Prune deletes retired keys by it.
	retention time.Duration
	now       func() time.Time
	// read reads a file of the directory with a size cap: readCapped. A
	// field so a test can stand in for a hung network file system, the one
	// way a read blocks that a test cannot make for real.
	read func(path string, limit int64) ([]byte, fs.FileInfo, error)
}

// NewDir returns the keys directory at path. retention is how long a
// retired key stays usable (token TTL + leeway), decided here once for
// every Load, List and Prune; now may be nil (time.Now).
func NewDir(path string, retention time.Duration, now func() time.Time) *Dir {
	if now == nil {
		now = time.Now
	}
	return &Dir{path: path, retention: retention, now: now, read: readCapped}
}

// Path is the directory's path.
func (d *Dir) Path() string { return d.path }

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
	return d.change(func(m manifest) error { return d.rotateLocked(m, emergency, alg) })
}

// RotateIfDue rotates when the active signing key has been active for
// every or longer. Replicas sharing the directory may all call it: the lock
// and the re-read manifest make exactly one of them rotate per period.
func (d *Dir) RotateIfDue(every time.Duration) (rotated bool, err error) {
	err = d.change(func(m manifest) error {
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
			return nil
		}
		rotated = true
		return d.rotateLocked(m, false, "")
	})
	return rotated, err
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
// (retired + the Dir's retention is past).
func (d *Dir) Prune() (pruned []KeyInfo, err error) {
	err = d.change(func(m manifest) error {
		now := d.now()
		var keep, drop []entry
		for _, e := range m.Keys {
			if expired(e, d.retention, now) {
				drop = append(drop, e)
			} else {
				keep = append(keep, e)
			}
		}
		if len(drop) == 0 {
			return nil
		}
		if err := d.writeManifest(manifest{Version: 1, Keys: keep}); err != nil {
			return err
		}
		d.remove(drop)
		pruned = infos(drop, d.retention)
		return nil
	})
	return pruned, err
}

// List describes every key in the manifest.
func (d *Dir) List() ([]KeyInfo, error) {
	snap, err := d.readManifest()
	if err != nil {
		return nil, err
	}
	return infos(snap.m.Keys, d.retention), nil
}
