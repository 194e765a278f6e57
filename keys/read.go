package keys

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Caps on what one read of the keys directory takes in. The largest key
// this package makes (an RSA-2048 PKCS#8 PEM) is under 2 KiB and an
// encryption key's JWK is about 150 bytes, so 16 KiB leaves room for
// bigger RSA keys made elsewhere; a manifest lists a few dozen keys at
// most, about 300 bytes each, so 1 MiB is generous. Anything larger is
// not ours and is refused before it is read.
const (
	maxKeyFileBytes  = 16 << 10
	maxManifestBytes = 1 << 20
)

// Errors a read of the keys directory gives, for errors.Is; each is
// wrapped with the file's name, never its contents.
var (
	// ErrNotRegular means a name in the keys directory is a FIFO, device,
	// socket or directory: reading it could block forever or never end.
	ErrNotRegular = errors.New("keys: not a regular file")
	// ErrTooLarge means a key file or the manifest is over its size cap.
	ErrTooLarge = errors.New("keys: file larger than allowed")
)

// readCapped reads a regular file of at most limit bytes. It opens with
// O_NONBLOCK, so a FIFO's open returns at once instead of waiting for a
// writer, then checks the opened file itself (fstat, so nothing can be
// swapped in between the check and the read) and reads no more than
// limit+1 bytes, so a file that grows after the check is refused too. It
// returns the file's metadata for permission checks and change detection.
func readCapped(path string, limit int64) ([]byte, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	name := filepath.Base(path)
	if !st.Mode().IsRegular() {
		return nil, st, fmt.Errorf("%w: %s is a %s", ErrNotRegular, name, fileType(st.Mode()))
	}
	if st.Size() > limit {
		return nil, st, fmt.Errorf("%w: %s is %d bytes, the limit is %d", ErrTooLarge, name, st.Size(), limit)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, st, err
	}
	if int64(len(b)) > limit {
		return nil, st, fmt.Errorf("%w: %s grew past %d bytes while read", ErrTooLarge, name, limit)
	}
	return b, st, nil
}

// fileType names a non-regular file's type for an error message.
func fileType(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	case m.IsDir():
		return "directory"
	}
	return "special file (mode " + m.String() + ")"
}

// ErrUnsafePermissions means the keys directory, the manifest or a key file
// is writable by group or others on a writable file system: someone other
// than the owner could swap in their own signing key, so nothing is loaded.
var ErrUnsafePermissions = errors.New("keys: writable by group or others")

// stRDOnly is the read-only flag of statfs(2): ST_RDONLY on Linux and
// MNT_RDONLY on the BSDs and macOS are both 1.
const stRDOnly = 1

// readOnlyFS reports whether path is on a read-only mount, where mode bits
// that allow writing allow nothing. A Kubernetes Secret volume is one: its
// directory is mode 1777 on a read-only tmpfs.
func readOnlyFS(path string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return false
	}
	return uint64(st.Flags)&stRDOnly != 0
}

// checkWritable refuses a file or directory that group or others may write,
// unless the file system is read-only.
func checkWritable(what, path string, st fs.FileInfo, readOnly bool) error {
	if st.Mode().Perm()&0o022 == 0 || readOnly {
		return nil
	}
	fix := "chmod go-w " + path
	return fmt.Errorf("%w: %s %s (mode %04o); run: %s", ErrUnsafePermissions, what, path, st.Mode().Perm(), fix)
}

// ownerWarning warns when path belongs to neither the serving user nor
// root: another account could then change or replace the keys.
func ownerWarning(what, path string, st fs.FileInfo) string {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	euid := os.Geteuid()
	if int64(sys.Uid) == int64(euid) || sys.Uid == 0 {
		return ""
	}
	return fmt.Sprintf("%s %s is owned by uid %d, neither the serving user (uid %d) nor root; run: chown %d %s",
		what, path, sys.Uid, euid, euid, path)
}
