package bounded_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/internal/bounded"
)

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	tests := []struct {
		name     string
		path     string
		want     string
		wantErr  string // "" when the read succeeds
		notExist bool
	}{
		{name: "small", path: write("small", "abc"), want: "abc"},
		{name: "at the limit", path: write("limit", "0123456789"), want: "0123456789"},
		{name: "over the limit", path: write("over", "0123456789x"), wantErr: "is over 10 bytes"},
		{name: "FIFO", path: fifo, wantErr: "is not a regular file"},
		{name: "directory", path: dir, wantErr: "is not a regular file"},
		{name: "missing", path: filepath.Join(dir, "none"), wantErr: "no such file", notExist: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan struct{})
			var got []byte
			var err error
			go func() { defer close(done); got, err = bounded.ReadFile(tc.path, 10) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("ReadFile blocked")
			}
			if tc.wantErr == "" {
				if err != nil || string(got) != tc.want {
					t.Fatalf("ReadFile = %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ReadFile error %v, want one saying %q", err, tc.wantErr)
			}
			if tc.notExist != errors.Is(err, fs.ErrNotExist) {
				t.Errorf("errors.Is(%v, fs.ErrNotExist) = %v", err, !tc.notExist)
			}
		})
	}
}
