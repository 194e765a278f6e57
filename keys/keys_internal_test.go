package keys

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"io/fs"
	"log/slog"
	"math/big"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/internal/syncbuf"
)

// TestThumbprintRFC7638Example checks the thumbprint against the worked
// example of RFC 7638 section 3.1.
func TestThumbprintRFC7638Example(t *testing.T) {
	t.Parallel()
	n, err := base64.RawURLEncoding.DecodeString("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
	if err != nil {
		t.Fatal(err)
	}
	got, err := thumbprint(&rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537})
	if err != nil {
		t.Fatal(err)
	}
	if want := "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Errorf("thumbprint = %s, want %s", got, want)
	}
}

// TestHungReadDoesNotWedgeReloads stands in for a hung network file system
// (a read that does not return): Reload gives up after the read timeout
// with ErrReadTimeout and an ERROR instead of blocking, a second Reload
// (another SIGHUP) does not queue behind the first, serving keeps the last
// good keys, Stale reports the timeout, and once the file system answers
// again the poll picks up a rotation made meanwhile.
func TestHungReadDoesNotWedgeReloads(t *testing.T) {
	t.Parallel()
	d := NewDir(filepath.Join(t.TempDir(), "keys"), time.Hour, nil)
	if _, err := d.Init(ES256); err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	s, err := NewStore(d, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	s.readTimeout = 20 * time.Millisecond
	good := s.Current()

	var hung atomic.Bool
	release := make(chan struct{})
	d.read = func(path string, limit int64) ([]byte, fs.FileInfo, error) {
		if hung.Load() {
			<-release
		}
		return readCapped(path, limit)
	}
	hung.Store(true)
	for i := range 2 {
		if err := s.Reload(); !errors.Is(err, ErrReadTimeout) {
			t.Fatalf("Reload %d on a hung file system: %v, want ErrReadTimeout", i+1, err)
		}
	}
	if n := strings.Count(logs.String(), `"level":"ERROR"`); n != 2 {
		t.Errorf("%d ERRORs for two timed-out reloads, want 2: %s", n, logs.String())
	}
	if s.Current() != good {
		t.Error("a timed-out reload replaced the ring")
	}
	var stale *StaleError
	if err := s.Stale(0); !errors.As(err, &stale) || stale.Reason != "reading the keys directory timed out" {
		t.Errorf("Stale(0) on a hung file system = %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Watch(ctx, 10*time.Millisecond)
	if err := NewDir(d.Path(), time.Hour, nil).Rotate(true); err != nil { // the CLI, another process
		t.Fatal(err)
	}
	hung.Store(false)
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for s.Current().SigningKey().KID == good.SigningKey().KID {
		if time.Now().After(deadline) {
			t.Fatal("the poll did not pick up the rotation after the file system recovered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Stale(0); err != nil {
		t.Errorf("Stale after recovery = %v, want nil", err)
	}
}
