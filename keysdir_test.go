package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// putFIFO replaces path with a FIFO and returns a func that puts the
// saved content back by rename, as an operator repairing it would.
func putFIFO(t *testing.T, path string) (restore func()) {
	t.Helper()
	saved, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		tmp := path + ".repair"
		if err := os.WriteFile(tmp, saved, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFIFOManifestFlipsReadyz: with a FIFO as keyset.json the poll logs an
// ERROR instead of blocking, the last good keys keep signing, and /readyz
// answers 503 problem+json saying why (no path) once the directory has
// failed for two reload intervals; after a repair and an emergency
// rotation the poll loads the new keys and /readyz answers 200 again.
func TestFIFOManifestFlipsReadyz(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	s := startServer(t, f.env.with("WXTOKEN_RELOAD_INTERVAL", "100ms"))
	before, _ := login(t, s.URL, "fifo-1")
	if c := do(t, "GET", s.URL+"/readyz", "", "", nil); c.Status != 200 {
		t.Fatalf("readyz before = %d %s", c.Status, c.Body)
	}
	restore := putFIFO(t, filepath.Join(f.keysDir, "keyset.json"))

	eventually(t, 10*time.Second, "an ERROR naming the FIFO", func() bool {
		return strings.Contains(s.logs.String(), `"level":"ERROR"`) && strings.Contains(s.logs.String(), "FIFO")
	})
	eventually(t, 10*time.Second, "readyz answers 503", func() bool {
		return do(t, "GET", s.URL+"/readyz", "", "", nil).Status == 503
	})
	p := assertProblem(t, do(t, "GET", s.URL+"/readyz", "", "", nil), 503, "unavailable")
	if d, _ := p["detail"].(string); !strings.Contains(d, "not a regular file") || strings.Contains(d, f.keysDir) {
		t.Errorf("readyz detail %q: want the reason and no path", d)
	}
	if tok, _ := login(t, s.URL, "fifo-2"); kidOf(t, tok) != kidOf(t, before) {
		t.Fatalf("while the manifest is a FIFO tokens are signed by %s, want the last good %s", kidOf(t, tok), kidOf(t, before))
	}

	restore()
	mustRun(t, f.env, "keys", "rotate", "--now")
	active := kidsIn(listKeys(t, f.env), "signing", "active")[0]
	eventually(t, 10*time.Second, "the poll loads the emergency rotation", func() bool {
		tok, _ := login(t, s.URL, "fifo-3-"+time.Now().Format("150405.000000"))
		return kidOf(t, tok) == active
	})
	eventually(t, 10*time.Second, "readyz answers 200 again", func() bool {
		return do(t, "GET", s.URL+"/readyz", "", "", nil).Status == 200
	})
}

// TestSIGHUPAfterFIFOKeyFile: with polling effectively off, SIGHUP reloads
// a directory whose key file is a FIFO without blocking (ERROR logged), and
// a second SIGHUP after an emergency rotation loads the new keys: a FIFO
// never wedges the reload.
func TestSIGHUPAfterFIFOKeyFile(t *testing.T) {
	if testing.Short() {
		t.Skip("starts OS processes")
	}
	t.Parallel()
	f := newFixture(t, testAppID)
	e := f.env.with("WXTOKEN_RELOAD_INTERVAL", "1h")
	p := startProcess(t, e)
	before, _ := login(t, p.URL, "hup-fifo-1")
	restore := putFIFO(t, filepath.Join(f.keysDir, kidOf(t, before)+".pem"))
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "SIGHUP logs an ERROR naming the FIFO", func() bool {
		return strings.Contains(p.logs.String(), `"level":"ERROR"`) && strings.Contains(p.logs.String(), "FIFO")
	})
	restore()
	mustRun(t, e, "keys", "rotate", "--now")
	active := kidsIn(listKeys(t, e), "signing", "active")[0]
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the second SIGHUP loads the emergency rotation", func() bool {
		tok, _ := login(t, p.URL, "hup-fifo-2-"+time.Now().Format("150405.000000"))
		return kidOf(t, tok) == active
	})
}

// TestWritableKeysDirFlipsReadyz: a keys directory made world-writable
// under a running server stops loading (the last good keys keep signing)
// and /readyz says why; chmod 700 brings it back.
func TestWritableKeysDirFlipsReadyz(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	s := startServer(t, f.env.with("WXTOKEN_RELOAD_INTERVAL", "100ms"))
	before, _ := login(t, s.URL, "chmod-1")
	if err := os.Chmod(f.keysDir, 0o777); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "readyz answers 503", func() bool {
		return do(t, "GET", s.URL+"/readyz", "", "", nil).Status == 503
	})
	p := assertProblem(t, do(t, "GET", s.URL+"/readyz", "", "", nil), 503, "unavailable")
	if d, _ := p["detail"].(string); !strings.Contains(d, "writable by group or others") || strings.Contains(d, f.keysDir) {
		t.Errorf("readyz detail %q: want the reason and no path", d)
	}
	if !strings.Contains(s.logs.String(), `"level":"ERROR"`) {
		t.Errorf("no ERROR logged:\n%s", s.logs.String())
	}
	if tok, _ := login(t, s.URL, "chmod-2"); kidOf(t, tok) != kidOf(t, before) {
		t.Fatalf("tokens signed by %s, want the last good %s", kidOf(t, tok), kidOf(t, before))
	}
	if err := os.Chmod(f.keysDir, 0o700); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "readyz answers 200 again", func() bool {
		return do(t, "GET", s.URL+"/readyz", "", "", nil).Status == 200
	})
}
