package keys

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrReadTimeout means a read of the keys directory did not return in
// time: a file on a hung network file system, say. The read goes on in
// the background; no second one starts until it returns.
var ErrReadTimeout = errors.New("keys: reading the keys directory timed out")

// defaultReadTimeout bounds one load of the keys directory: reading a
// manifest and a handful of small files takes milliseconds, so seconds
// mean the file system is stuck.
const defaultReadTimeout = 5 * time.Second

// Store holds the live Ring of a running server. Readers take Current once
// per use; Reload swaps in a new Ring atomically or keeps the old one.
//
// A load reads the disk in its own goroutine and builds a new Ring there,
// outside every lock; only the swap is atomic. The caller waits at most
// readTimeout, so a read that blocks (a hung network file system) delays
// neither serving, which never waits for a load, nor SIGHUP and the poll,
// which give up, log an ERROR and count the directory as failing.
type Store struct {
	dir         *Dir
	log         *slog.Logger
	ring        atomic.Pointer[Ring]
	readTimeout time.Duration

	// busy holds a token while a load runs, so loads never overlap and a
	// blocked one is never joined by a pile of others.
	busy chan struct{}

	mu           sync.Mutex // guards the fields below; never held across a read of the disk
	started      uint64     // loads started
	finished     uint64     // loads finished (applied); < started while one runs
	lastError    string     // mark of the failure last logged, to log it once per content
	failingSince time.Time  // zero while the directory loads
	failure      error      // the last failure, while failingSince is set
	warned       string     // the permission warnings last logged, to log them once while unchanged
	onReload     func(error)
}

// OnReload sets f to be told the outcome of every load that reads the
// directory (nil: success), for metrics; a poll that finds nothing changed
// is not one. f runs under the Store's lock, so it must be quick and must
// not call the Store.
func (s *Store) OnReload(f func(error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onReload = f
}

// warn logs permission warnings, which name files, modes and owners only.
func (s *Store) warn(warnings []string) {
	for _, w := range warnings {
		s.log.Warn(w)
	}
}

// NewStore loads dir once and logs its permission warnings; ErrNoKeys
// passes through for a helpful message. The Store keeps retired keys for
// dir's retention.
func NewStore(dir *Dir, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r, err := dir.Load()
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, log: logger, readTimeout: defaultReadTimeout,
		busy: make(chan struct{}, 1)}
	s.ring.Store(r)
	warnings := dir.CheckPermissions()
	s.warn(warnings)
	s.warned = strings.Join(warnings, "\n")
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
func (s *Store) Reload() error { return s.run(true, true) }

// StaleError says the keys on disk have not loaded for a while; the server
// still serves its last good keys. Its text names the cause's class only:
// no paths, file contents or key ids, as /readyz shows it.
type StaleError struct {
	Since  time.Time
	For    time.Duration
	Reason string
}

func (e *StaleError) Error() string {
	return fmt.Sprintf("the keys on disk have not loaded for %s (%s); serving the last good keys",
		e.For.Round(time.Second), e.Reason)
}

// Stale returns a *StaleError when every load of the directory has failed
// for longer than after, and nil otherwise. A server's readiness check
// calls it with a small multiple of its poll interval: a replica that
// cannot see a rotation (an emergency one included) for that long should
// leave the load balancer rather than sign with keys the others dropped.
func (s *Store) Stale(after time.Duration) error {
	s.mu.Lock()
	since, failure := s.failingSince, s.failure
	s.mu.Unlock()
	if since.IsZero() {
		return nil
	}
	if d := time.Since(since); d > after {
		return &StaleError{Since: since, For: d, Reason: reason(failure)}
	}
	return nil
}

// reason names a load failure's class for /readyz.
func reason(err error) string {
	switch {
	case errors.Is(err, ErrReadTimeout):
		return "reading the keys directory timed out"
	case errors.Is(err, ErrNotRegular):
		return "a name in the keys directory is not a regular file"
	case errors.Is(err, ErrTooLarge):
		return "a key file or the manifest is larger than allowed"
	case errors.Is(err, ErrUnsafePermissions):
		return "the keys directory or a key file is writable by group or others"
	case errors.Is(err, ErrNoKeys):
		return "the manifest is missing"
	}
	return "the keys directory is invalid"
}

// run starts one load (force: even if nothing changed) and waits for it at
// most readTimeout. logRepeats=false logs a failure only the first time it
// is seen with that manifest content, so Watch does not log every tick.
func (s *Store) run(force, logRepeats bool) error {
	timer := time.NewTimer(s.readTimeout)
	defer timer.Stop()
	select {
	case s.busy <- struct{}{}:
	case <-timer.C:
		return s.timedOut(fmt.Errorf("%w: an earlier read has not returned for over %s", ErrReadTimeout, s.readTimeout), logRepeats, false)
	}
	s.mu.Lock()
	s.started++
	s.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		defer func() { <-s.busy }()
		done <- s.load(force, logRepeats)
	}()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		return s.timedOut(fmt.Errorf("%w: no answer within %s", ErrReadTimeout, s.readTimeout), logRepeats, true)
	}
}

// timedOut records a load that did not finish in time, unless it finished
// just as the timer fired: then it recorded its own outcome, and err is
// still returned when that load was not this caller's (it saw the disk
// before the caller asked).
func (s *Store) timedOut(err error, logRepeats bool, ours bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished == s.started {
		if ours {
			if s.failingSince.IsZero() {
				return nil
			}
			return s.failure
		}
		return err
	}
	s.failLocked(err, "timeout", logRepeats)
	return err
}

// failLocked records a failure and logs it unless it is a repeat Watch
// need not log again.
func (s *Store) failLocked(err error, mark string, logRepeats bool) {
	if s.onReload != nil {
		s.onReload(err)
	}
	if s.failingSince.IsZero() {
		s.failingSince = time.Now()
	}
	s.failure = err
	if logRepeats || mark != s.lastError {
		s.log.Error("keys reload failed; serving the last good keys", "keys_dir", s.dir.Path(), "err", err.Error())
	}
	s.lastError = mark
}

// load reads the directory, in run's goroutine, and applies the outcome.
// Unless forced it first checks whether anything changed since the live
// Ring was loaded: the manifest's bytes, the loaded files' metadata, a
// retired key passing its retention. While the directory is failing it
// always loads, so a repair is noticed however it was made.
func (s *Store) load(force, logRepeats bool) error {
	cur := s.Current()
	s.mu.Lock()
	failing := !s.failingSince.IsZero()
	s.mu.Unlock()
	if !force && !failing && s.dir.upToDate(cur) {
		s.mu.Lock()
		s.finished++
		s.mu.Unlock()
		return nil
	}
	var raw []byte
	var r *Ring
	var err error
	for i := 0; i <= reloadRetries; i++ {
		if i > 0 {
			time.Sleep(reloadBackoff)
		}
		r, raw, err = s.dir.load()
		if err == nil {
			break
		}
	}
	var warnings []string
	if err == nil {
		warnings = s.dir.CheckPermissions()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finished++
	if err != nil {
		s.failLocked(err, brokenMark(raw, err), logRepeats)
		return err
	}
	s.lastError, s.failingSince, s.failure = "", time.Time{}, nil
	if s.onReload != nil {
		s.onReload(nil)
	}
	if w := strings.Join(warnings, "\n"); logRepeats || w != s.warned {
		s.warn(warnings)
		s.warned = w
	}
	old := s.ring.Swap(r)
	if old == nil || old.etag != r.etag || !slices.Equal(old.kids, r.kids) ||
		old.signing.KID != r.signing.KID || old.encryption.KID != r.encryption.KID {
		s.log.Info("keys loaded", "signing_kid", r.signing.KID, "encryption_kid", r.encryption.KID, "kids", r.kids)
	}
	return nil
}

// brokenMark identifies a broken directory without keeping its content: a
// hash of the manifest, "absent" distinct from an empty file, and the
// failure's text, so a new kind of failure is logged again.
func brokenMark(raw []byte, err error) string {
	if raw == nil {
		return "absent\x00" + err.Error()
	}
	sum := sha256.Sum256(raw)
	return string(sum[:]) + "\x00" + err.Error()
}

// Watch polls the directory every interval until ctx ends, reloading when
// the manifest's bytes or the loaded files changed or a retired key passed
// its retention. While the directory is broken it keeps trying (a key file
// may be fixed without touching the manifest) but logs once per distinct
// manifest content and failure. Each poll is bounded by the read timeout.
func (s *Store) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Second
	}
	tick(ctx, interval, func() { _ = s.run(false, false) })
}
