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
)

const lockFile = ".lock"

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
	// Each step's error is kept: a key file that failed to write or sync
	// must never be renamed into place.
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
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
