package keys

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
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
	lastError []byte     // manifest content last seen broken, to log it once
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

// Reload re-reads the directory. On failure it keeps serving the last good
// keys, logs the error once per broken manifest, and returns it.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var raw []byte
	var r *Ring
	var err error
	for i := 0; i <= reloadRetries; i++ {
		if i > 0 {
			time.Sleep(reloadBackoff)
		}
		raw, err = os.ReadFile(filepath.Join(s.dir.path, ManifestFile))
		if err == nil {
			r, err = s.dir.load(raw, s.retention)
		} else if errors.Is(err, os.ErrNotExist) {
			err = ErrNoKeys
		}
		if err == nil {
			break
		}
	}
	if err != nil {
		seen := append([]byte{0}, raw...) // the 0 tells "no manifest" from an empty one
		if string(seen) != string(s.lastError) {
			s.log.Error("keys reload failed; serving the last good keys", "keys_dir", s.dir.path, "err", err.Error())
			s.lastError = seen
		}
		return err
	}
	s.lastError = nil
	old := s.ring.Swap(r)
	if old == nil || !old.sameManifest(raw) || old.etag != r.etag {
		s.log.Info("keys loaded", "signing_kid", r.signing.KID, "encryption_kid", r.encryption.KID, "kids", r.kids)
	}
	return nil
}

// Watch polls the directory every interval until ctx ends, reloading when
// the manifest changed or a retired key passed its retention.
func (s *Store) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := s.Current()
		raw, err := os.ReadFile(filepath.Join(s.dir.path, ManifestFile))
		due := !cur.expiresAt.IsZero() && !s.dir.now().Before(cur.expiresAt)
		if err == nil && cur.sameManifest(raw) && !due {
			continue
		}
		s.mu.Lock()
		seenBroken := err == nil && string(append([]byte{0}, raw...)) == string(s.lastError)
		s.mu.Unlock()
		if seenBroken && !due {
			continue
		}
		_ = s.Reload()
	}
}
