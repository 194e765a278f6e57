package keys

import (
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

// Stray is a file a change of the directory left behind when it was
// interrupted (killed, out of disk): a temporary file (".tmp-*", perhaps
// holding a private key) or a key file the manifest does not name. Serving
// never reads strays; prune and the next rotation remove them.
type Stray struct {
	File     string    // name in the directory
	Kind     Kind      // of a key file; empty for a temporary file
	KID      string    // of a key file, from its name; empty for a temporary file
	Modified time.Time // when it was last written
}

// tmpPrefix starts the names writeAtomic gives files before renaming them.
const tmpPrefix = ".tmp-"

// strayKind tells whether name is one this package writes, and what kind:
// "<kid>.pem" for signing keys, "enc-<kid>.jwk" for encryption keys, and
// ".tmp-*" while writing. Other names (an operator's notes, a Kubernetes
// Secret's "..data") are never called strays.
func strayKind(name string) (kind Kind, kid string, ok bool) {
	switch {
	case strings.HasPrefix(name, tmpPrefix):
		return "", "", true
	case strings.HasPrefix(name, "enc-") && strings.HasSuffix(name, ".jwk"):
		kid = strings.TrimSuffix(strings.TrimPrefix(name, "enc-"), ".jwk")
		return Encryption, kid, validKID(kid)
	case strings.HasSuffix(name, ".pem"):
		kid = strings.TrimSuffix(name, ".pem")
		return Signing, kid, validKID(kid)
	}
	return "", "", false
}

// Strays lists the files interrupted changes left behind. It takes the
// directory's lock shared when it can, so a rotation under way is not
// mistaken for one that was interrupted; on a read-only mount without a
// lock file it lists without.
func (d *Dir) Strays() ([]Stray, error) {
	if f, err := os.Open(filepath.Join(d.path, lockFile)); err == nil {
		defer f.Close()
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err == nil {
			defer func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }()
		}
	}
	snap, err := d.readManifest()
	if err != nil {
		return nil, err
	}
	return d.strays(snap.m.Keys)
}

// RemoveStrays deletes what Strays lists, under the directory's lock, and
// returns what it deleted.
func (d *Dir) RemoveStrays() (removed []Stray, err error) {
	err = d.change(func(m manifest) error {
		var rerr error
		removed, rerr = d.removeStrays(m.Keys)
		return rerr
	})
	return removed, err
}

// strays lists the directory's strays given the manifest's keys.
func (d *Dir) strays(keys []entry) ([]Stray, error) {
	named := make([]string, 0, len(keys))
	for _, e := range keys {
		named = append(named, e.File)
	}
	entries, err := os.ReadDir(d.path)
	if err != nil {
		return nil, fmt.Errorf("keys: list directory: %w", err)
	}
	var out []Stray
	for _, de := range entries {
		kind, kid, ok := strayKind(de.Name())
		if !ok || de.IsDir() || slices.Contains(named, de.Name()) {
			continue
		}
		s := Stray{File: de.Name(), Kind: kind, KID: kid}
		if info, err := de.Info(); err == nil {
			s.Modified = info.ModTime()
		}
		out = append(out, s)
	}
	return out, nil
}

// removeStrays deletes the strays given the manifest's keys; the caller
// holds the lock, so no change is under way.
func (d *Dir) removeStrays(keys []entry) ([]Stray, error) {
	list, err := d.strays(keys)
	if err != nil {
		return nil, err
	}
	var removed []Stray
	var errs []error
	for _, s := range list {
		if err := os.Remove(filepath.Join(d.path, s.File)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("keys: remove stray %s: %w", s.File, err))
			continue
		}
		removed = append(removed, s)
	}
	return removed, errors.Join(errs...)
}
