package keys

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Store holds the live Ring of a running server. Readers take Current once
// per use; Reload swaps in a new Ring atomically or keeps the old one.
type Store struct {
	dir       *Dir
	retention time.Duration
	log       *slog.Logger
	ring      atomic.Pointer[Ring]

	mu        sync.Mutex // serializes reloads
	lastError string     // brokenMark of the manifest last seen broken, to log it once
}

// NewStore loads dir once; ErrNoKeys passes through for a helpful message.
func NewStore(dir *Dir, retention time.Duration, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r, err := dir.Load(retention)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, retention: retention, log: logger}
	s.ring.Store(r)
	return s, nil
}

// Current is the live Ring; never nil.
func (s *Store) Current() *Ring { return s.ring.Load() }

// reloadRetries covers a CLI that is mid-change: its files land before the
// manifest, but a prune may delete a file a stale manifest still names.
const (
	reloadRetries = 2
	reloadBackoff = 50 * time.Millisecond
)

// Reload re-reads the directory, for SIGHUP and after a rotation. On
// failure it keeps serving the last good keys, logs the error and returns it.
func (s *Store) Reload() error { return s.reload(true) }

// reload loads the directory, retrying a failed load a few times because a
// CLI may be mid-change. logRepeats=false logs a failure only the first time
// the manifest is seen with that content, so Watch does not log every tick.
func (s *Store) reload(logRepeats bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var raw []byte
	var r *Ring
	var err error
	for i := 0; i <= reloadRetries; i++ {
		if i > 0 {
			time.Sleep(reloadBackoff)
		}
		raw, _, err = s.dir.readManifestFile()
		if err == nil {
			r, err = s.dir.load(raw, s.retention)
		}
		if err == nil {
			break
		}
	}
	if err != nil {
		seen := brokenMark(raw)
		if logRepeats || seen != s.lastError {
			s.log.Error("keys reload failed; serving the last good keys", "keys_dir", s.dir.path, "err", err.Error())
		}
		s.lastError = seen
		return err
	}
	s.lastError = ""
	old := s.ring.Swap(r)
	if old == nil || old.etag != r.etag || !slices.Equal(old.kids, r.kids) ||
		old.signing.KID != r.signing.KID || old.encryption.KID != r.encryption.KID {
		s.log.Info("keys loaded", "signing_kid", r.signing.KID, "encryption_kid", r.encryption.KID, "kids", r.kids)
	}
	return nil
}

// brokenMark identifies a broken manifest's content without keeping it: a
// hash, with "absent" distinct from an empty file.
func brokenMark(raw []byte) string {
	if raw == nil {
		return "absent"
	}
	sum := sha256.Sum256(raw)
	return string(sum[:])
}

// Watch polls the directory every interval until ctx ends, reloading when
// the manifest's bytes changed or a retired key passed its retention. While
// the directory is broken it keeps trying (a key file may be fixed without
// touching the manifest) but logs once per distinct manifest content.
func (s *Store) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := s.Current()
		raw, _, err := s.dir.readManifestFile()
		due := !cur.expiresAt.IsZero() && !s.dir.now().Before(cur.expiresAt)
		if err == nil && cur.sameManifest(raw) && !due {
			continue
		}
		_ = s.reload(false)
	}
}
