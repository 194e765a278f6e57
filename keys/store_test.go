package keys_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/internal/syncbuf"
	"github.com/wxtoken/wxtoken/keys"
)

// count is how often sub appears in the logs so far.
func count(logs *syncbuf.Buffer, sub string) int { return strings.Count(logs.String(), sub) }

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNewStoreErrors(t *testing.T) {
	t.Parallel()
	_, err := keys.NewStore(keys.NewDir(filepath.Join(t.TempDir(), "none"), retention, nil), nil)
	if !errors.Is(err, keys.ErrNoKeys) {
		t.Errorf("NewStore on a missing directory: %v, want ErrNoKeys", err)
	}
	d, _ := newDir(t, "ES256")
	if err := os.WriteFile(filepath.Join(d.Path(), "keyset.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.NewStore(d, nil); err == nil || errors.Is(err, keys.ErrNoKeys) {
		t.Errorf("NewStore on a corrupt manifest: %v", err)
	}
}

// TestStoreLogsChangesOnce: INFO with kids when the ring changes and not
// when it does not; an explicit Reload always reports its failure.
func TestStoreLogsChangesOnce(t *testing.T) {
	t.Parallel()
	d, _ := newDir(t, "ES256")
	s, logs := loggedStore(t, d)
	if err := s.Reload(); err != nil || count(logs, `"level":"INFO"`) != 0 {
		t.Fatalf("unchanged reload: %v, logs %s", err, logs.String())
	}
	if err := d.Rotate(false); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if count(logs, `"level":"INFO"`) != 1 || !strings.Contains(logs.String(), s.Current().SigningKey().KID) {
		t.Errorf("rotation not logged with its kids: %s", logs.String())
	}
	manifest := filepath.Join(d.Path(), "keyset.json")
	if err := os.Remove(manifest); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.Reload(); !errors.Is(err, keys.ErrNoKeys) {
			t.Errorf("Reload without a manifest: %v, want ErrNoKeys", err)
		}
	}
	if n := count(logs, `"level":"ERROR"`); n != 2 {
		t.Errorf("%d errors logged for two failed explicit reloads, want 2", n)
	}
	if s.Current() == nil {
		t.Error("the ring is gone after a failed reload")
	}
}

// TestWatchLogsBrokenDirectoryOncePerContent: a broken directory logs an
// error the first time each broken manifest is seen, not every tick, and the
// server keeps the last good keys throughout.
func TestWatchLogsBrokenDirectoryOncePerContent(t *testing.T) {
	t.Parallel()
	d, _ := newDir(t, "ES256")
	s, logs := loggedStore(t, d)
	good := s.Current()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Watch(ctx, 10*time.Millisecond)

	manifest := filepath.Join(d.Path(), "keyset.json")
	saved, _ := os.ReadFile(manifest)
	for i, broken := range []string{`{"version":1,"keys":[{"kid":"tru`, `{"version":2}`} {
		// Replace the manifest by rename: os.WriteFile truncates first, and
		// Watch could see the empty file in between, a third content.
		tmp := manifest + ".new"
		if err := os.WriteFile(tmp, []byte(broken), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, manifest); err != nil {
			t.Fatal(err)
		}
		eventually(t, "an error is logged", func() bool { return count(logs, `"level":"ERROR"`) == i+1 })
		time.Sleep(400 * time.Millisecond) // many ticks
		if n := count(logs, `"level":"ERROR"`); n != i+1 {
			t.Errorf("%d errors after broken manifest %d, want %d (once per content)", n, i+1, i+1)
		}
		if s.Current() != good {
			t.Error("a broken directory replaced the ring")
		}
	}

	// A missing key file under an unchanged, valid manifest heals when the
	// file comes back, without any manifest change.
	if err := os.WriteFile(manifest, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Rotate(false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the rotation is loaded", func() bool { return s.Current().SigningKey().KID != good.SigningKey().KID })
	active := filepath.Join(d.Path(), s.Current().SigningKey().KID+".pem")
	pem, _ := os.ReadFile(active)
	if err := os.Remove(active); err != nil {
		t.Fatal(err)
	}
	errorsBefore := count(logs, `"level":"ERROR"`) // counted first: Watch may log before Rotate returns
	if err := d.Rotate(false); err != nil {        // manifest changes; its new ring cannot load
		t.Fatal(err)
	}
	eventually(t, "the broken rotation is logged", func() bool { return count(logs, `"level":"ERROR"`) > errorsBefore })
	if err := os.WriteFile(active, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the restored key file is picked up", func() bool {
		_, ok := s.Current().VerificationKey(strings.TrimSuffix(filepath.Base(active), ".pem"))
		return ok && len(kids(t, d, keys.Signing, keys.Retired)) == 2 &&
			s.Current().SigningKey().KID == kids(t, d, keys.Signing, keys.Active)[0]
	})
}

// TestWatchDropsExpiredRetiredKeys: a retired key leaves the live ring when
// its retention passes, with no manifest change and no prune.
func TestWatchDropsExpiredRetiredKeys(t *testing.T) {
	t.Parallel()
	d, clk := newDir(t, "EdDSA")
	old := mustLoad(t, d)
	if err := d.Rotate(false); err != nil {
		t.Fatal(err)
	}
	s, err := keys.NewStore(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Current().VerificationKey(old.SigningKey().KID); !ok {
		t.Fatal("the retired key is not published within its retention")
	}
	_, etag := s.Current().JWKS()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Watch(ctx, 10*time.Millisecond)
	clk.add(retention)
	eventually(t, "the retired keys leave the ring", func() bool {
		r := s.Current()
		_, sig := r.VerificationKey(old.SigningKey().KID)
		_, enc := r.DecryptionKey(old.EncryptionKey().KID)
		return !sig && !enc
	})
	if _, etag2 := s.Current().JWKS(); etag2 == etag {
		t.Error("the JWKS ETag did not change when a key left it")
	}
}

// TestOversizedFilesAreRefusedUnread: a manifest or key file grown past its
// cap (a sparse file, so the test itself stays small) is refused with
// ErrTooLarge and an ERROR naming the file, and the last good keys serve.
func TestOversizedFilesAreRefusedUnread(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		target func(d *keys.Dir) string
		size   int64
	}{
		{"manifest of 300 MB", func(d *keys.Dir) string { return filepath.Join(d.Path(), "keyset.json") }, 300 << 20},
		{"manifest just over 1 MiB", func(d *keys.Dir) string { return filepath.Join(d.Path(), "keyset.json") }, 1<<20 + 1},
		{"signing key of 1 GB", func(d *keys.Dir) string { return firstMatch(d, "*.pem") }, 1 << 30},
		{"encryption key of 64 KiB", func(d *keys.Dir) string { return firstMatch(d, "enc-*.jwk") }, 64 << 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, _ := newDir(t, "ES256")
			s, logs := loggedStore(t, d)
			good := s.Current()
			p := tc.target(d)
			if err := os.Truncate(p, tc.size); err != nil {
				t.Fatal(err)
			}
			if err := s.Reload(); !errors.Is(err, keys.ErrTooLarge) {
				t.Fatalf("Reload with %s: %v, want ErrTooLarge", tc.name, err)
			}
			if _, err := d.Load(); !errors.Is(err, keys.ErrTooLarge) {
				t.Errorf("Load with %s: %v, want ErrTooLarge", tc.name, err)
			}
			if s.Current() != good {
				t.Error("an oversized file replaced the last good keys")
			}
			if !strings.Contains(logs.String(), `"level":"ERROR"`) || !strings.Contains(logs.String(), filepath.Base(p)) {
				t.Errorf("no ERROR naming %s: %s", filepath.Base(p), logs.String())
			}
		})
	}
}

// within runs f and fails the test if it has not returned in 10 s: on a
// FIFO, an unguarded read blocks for good.
func within(t *testing.T, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s blocked", what)
		return nil
	}
}

// replaceWithFIFO puts a FIFO where path was, as a hostile or confused
// operator might.
func replaceWithFIFO(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestFIFOInKeysDirIsRefused: a FIFO named like the manifest or a key file
// is refused at once with ErrNotRegular and an ERROR, the last good keys
// keep serving, Stale reports it, polling goes on, and a later valid
// rotation is picked up by the poll and clears Stale.
func TestFIFOInKeysDirIsRefused(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		target func(d *keys.Dir, r *keys.Ring) string
	}{
		{"manifest", func(d *keys.Dir, _ *keys.Ring) string { return filepath.Join(d.Path(), "keyset.json") }},
		{"active signing key", func(d *keys.Dir, r *keys.Ring) string {
			return filepath.Join(d.Path(), r.SigningKey().KID+".pem")
		}},
		{"active encryption key", func(d *keys.Dir, r *keys.Ring) string {
			return filepath.Join(d.Path(), "enc-"+r.EncryptionKey().KID+".jwk")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, _ := newDir(t, "ES256")
			s, logs := loggedStore(t, d)
			good := s.Current()
			path := tc.target(d, good)
			saved, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			replaceWithFIFO(t, path)

			if err := within(t, "Reload", s.Reload); !errors.Is(err, keys.ErrNotRegular) {
				t.Fatalf("Reload with a FIFO as the %s: %v, want ErrNotRegular", tc.name, err)
			}
			if err := within(t, "Load", func() error { _, err := d.Load(); return err }); !errors.Is(err, keys.ErrNotRegular) {
				t.Errorf("Load with a FIFO as the %s: %v, want ErrNotRegular", tc.name, err)
			}
			if !strings.Contains(logs.String(), `"level":"ERROR"`) || !strings.Contains(logs.String(), "FIFO") {
				t.Errorf("no ERROR naming the FIFO: %s", logs.String())
			}
			if s.Current() != good {
				t.Error("the FIFO replaced the last good keys")
			}
			var stale *keys.StaleError
			if err := s.Stale(0); !errors.As(err, &stale) || !strings.Contains(stale.Error(), "not a regular file") {
				t.Errorf("Stale(0) while failing = %v, want a StaleError saying why", err)
			}
			if strings.Contains(stale.Error(), d.Path()) || strings.Contains(stale.Error(), good.SigningKey().KID) {
				t.Errorf("the stale error names paths or kids: %s", stale.Error())
			}
			if err := s.Stale(time.Hour); err != nil {
				t.Errorf("Stale(1h) right after the first failure = %v, want nil", err)
			}

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go s.Watch(ctx, 10*time.Millisecond)
			// The poll keeps running: an error per tick is not logged,
			// but the repair below is noticed only by polling.
			tmp := path + ".new"
			if err := os.WriteFile(tmp, saved, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
			if err := d.Rotate(true); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the poll loads the rotation made after the FIFO", func() bool {
				return s.Current().SigningKey().KID != good.SigningKey().KID
			})
			if err := s.Stale(0); err != nil {
				t.Errorf("Stale after a good load = %v, want nil", err)
			}
		})
	}
}

// TestUnsafePermissionsAreRefusedOnEveryReload: a directory, manifest or
// key file made writable by group or others after start is refused on the
// next reload (ErrUnsafePermissions, an ERROR), the last good keys keep
// serving, the poll notices a chmod alone, and undoing it heals.
func TestUnsafePermissionsAreRefusedOnEveryReload(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		target func(d *keys.Dir) string
		mode   os.FileMode
		safe   os.FileMode
	}{
		{"directory group-writable", func(d *keys.Dir) string { return d.Path() }, 0o770, 0o700},
		{"directory world-writable", func(d *keys.Dir) string { return d.Path() }, 0o703, 0o700},
		{"manifest group-writable", func(d *keys.Dir) string { return filepath.Join(d.Path(), "keyset.json") }, 0o620, 0o600},
		{"signing key world-writable", func(d *keys.Dir) string { return firstMatch(d, "*.pem") }, 0o602, 0o600},
		{"encryption key group-writable", func(d *keys.Dir) string { return firstMatch(d, "enc-*.jwk") }, 0o660, 0o600},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, _ := newDir(t, "ES256")
			s, logs := loggedStore(t, d)
			good := s.Current()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go s.Watch(ctx, 10*time.Millisecond)

			p := tc.target(d)
			if err := os.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the poll notices the chmod", func() bool { return s.Stale(0) != nil })
			if err := s.Reload(); !errors.Is(err, keys.ErrUnsafePermissions) {
				t.Fatalf("Reload with %s: %v, want ErrUnsafePermissions", tc.name, err)
			}
			if _, err := keys.NewStore(d, nil); !errors.Is(err, keys.ErrUnsafePermissions) {
				t.Errorf("NewStore with %s: %v, want ErrUnsafePermissions", tc.name, err)
			}
			if s.Current() != good {
				t.Error("unsafe permissions replaced the last good keys")
			}
			if !strings.Contains(logs.String(), `"level":"ERROR"`) || !strings.Contains(logs.String(), "writable by group or others") {
				t.Errorf("no ERROR saying why: %s", logs.String())
			}
			if err := os.Chmod(p, tc.safe); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the poll heals after the chmod is undone", func() bool { return s.Stale(0) == nil })
		})
	}
}

// TestForeignOwnerWarnsOnReload: a key file that comes to belong to a user
// who is neither the serving user nor root is loaded but warned about on
// the next reload, naming the file and uid only.
func TestForeignOwnerWarnsOnReload(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("chown to another user needs root")
	}
	d, _ := newDir(t, "ES256")
	s, logs := loggedStore(t, d)
	if strings.Contains(logs.String(), `"level":"WARN"`) {
		t.Fatalf("a fresh directory warns: %s", logs.String())
	}
	p := firstMatch(d, "*.pem")
	if err := os.Chown(p, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil {
		t.Fatalf("Reload with a foreign owner: %v, want a warning only", err)
	}
	if !strings.Contains(logs.String(), `"level":"WARN"`) || !strings.Contains(logs.String(), "owned by uid 4242") ||
		!strings.Contains(logs.String(), filepath.Base(p)) {
		t.Errorf("no WARN naming the file and its owner: %s", logs.String())
	}
}

// TestOwnGroupReadableIsNotAWarning: a key file open to its group only, where
// that group is the serving process's own (Kubernetes' fsGroup on a Secret
// mounted for a non-root pod), is no exposure; another group, or others,
// still draw the warning.
func TestOwnGroupReadableIsNotAWarning(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("chown to another group needs root")
	}
	d, _ := newDir(t, "ES256")
	p := firstMatch(d, "*.pem")
	for _, tt := range []struct {
		gid  int
		mode os.FileMode
		warn bool
	}{
		{os.Getegid(), 0o640, false},
		{os.Getegid(), 0o440, false},
		{4242, 0o640, true},
		{os.Getegid(), 0o644, true},
	} {
		if err := os.Chown(p, 0, tt.gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, tt.mode); err != nil {
			t.Fatal(err)
		}
		warned := strings.Contains(strings.Join(d.CheckPermissions(), "\n"), "readable by group or others")
		if warned != tt.warn {
			t.Errorf("gid %d mode %04o: warned = %v, want %v", tt.gid, tt.mode, warned, tt.warn)
		}
	}
}

// TestOnReloadReportsOutcomes: the reload hook hears every load that read
// the directory, nil for success and the error for a failure, and the
// active signing key's Since moves forward with a rotation.
func TestOnReloadReportsOutcomes(t *testing.T) {
	t.Parallel()
	d, _ := newDir(t, "ES256")
	s, err := keys.NewStore(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []error
	s.OnReload(func(err error) { got = append(got, err) })
	first := s.Current().SigningKey()
	if first.Since.IsZero() || first.Since.After(time.Now()) {
		t.Fatalf("active key Since = %v, want a past time", first.Since)
	}
	if err := d.Rotate(false); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	next := s.Current().SigningKey()
	if next.KID == first.KID || next.Since.Before(first.Since) {
		t.Errorf("after a rotation: kid %s since %v, was %s since %v", next.KID, next.Since, first.KID, first.Since)
	}
	if err := os.Remove(filepath.Join(d.Path(), "keyset.json")); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); !errors.Is(err, keys.ErrNoKeys) {
		t.Fatalf("Reload without a manifest: %v", err)
	}
	if len(got) != 2 || got[0] != nil || !errors.Is(got[1], keys.ErrNoKeys) {
		t.Errorf("reload outcomes = %v, want [nil ErrNoKeys]", got)
	}
}

// loggedStore loads d into a Store whose log lines go to the returned buffer.
func loggedStore(t *testing.T, d *keys.Dir) (*keys.Store, *syncbuf.Buffer) {
	t.Helper()
	logs := new(syncbuf.Buffer)
	s, err := keys.NewStore(d, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s, logs
}
