package logbuf_test

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/internal/logbuf"
	"github.com/wxtoken/wxtoken/internal/syncbuf"
)

// writes counts the writes that reach the output, and keeps what they said.
type writes struct {
	syncbuf.Buffer
	mu sync.Mutex
	n  int
}

func (w *writes) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.n++
	w.mu.Unlock()
	return w.Buffer.Write(p)
}

func (w *writes) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

func TestLinesAreBatched(t *testing.T) {
	out := &writes{}
	w := logbuf.New(out, 4096, time.Hour)
	for i := range 10 {
		fmt.Fprintf(w, "line %d\n", i)
	}
	if out.count() != 0 {
		t.Fatalf("%d writes before the buffer filled or was flushed, want 0", out.count())
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if out.count() != 1 || !strings.HasPrefix(out.String(), "line 0\nline 1\n") || !strings.HasSuffix(out.String(), "line 9\n") {
		t.Fatalf("after Flush: %d writes of %q, want one with every line", out.count(), out.String())
	}
}

func TestLinesWaitAtMostTheDelay(t *testing.T) {
	out := &writes{}
	w := logbuf.New(out, 4096, 10*time.Millisecond)
	fmt.Fprintln(w, "held briefly")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "held briefly") {
		if time.Now().After(deadline) {
			t.Fatal("a buffered line was never written out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAFullBufferWritesWholeLines(t *testing.T) {
	out := &writes{}
	w := logbuf.New(out, 32, time.Hour)
	lines := []string{"aaaaaaaaaa\n", "bbbbbbbbbb\n", "cccccccccc\n", "dddddddddd\n"}
	for _, l := range lines {
		if _, err := w.Write([]byte(l)); err != nil {
			t.Fatal(err)
		}
	}
	// Three lines fill 33 bytes of a 32-byte buffer: the first two went out
	// together before the third, none of them cut.
	if got := out.String(); got != lines[0]+lines[1] {
		t.Fatalf("written before Flush: %q, want the first two lines whole", got)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != strings.Join(lines, "") {
		t.Fatalf("written: %q", got)
	}
}

func TestUrgentRecordsGoOutAtOnce(t *testing.T) {
	out := &writes{}
	w := logbuf.New(out, 64<<10, time.Hour)
	log := slog.New(logbuf.Urgent(slog.NewJSONHandler(w, nil), w, slog.LevelWarn)).With("app", "x")
	log.Info("request", "status", 200)
	if out.count() != 0 {
		t.Fatal("an info line was written at once")
	}
	log.Warn("upstream slow")
	got := out.String()
	if !strings.Contains(got, `"msg":"request"`) || !strings.Contains(got, `"msg":"upstream slow"`) || !strings.Contains(got, `"app":"x"`) {
		t.Fatalf("after a warning the output holds %q, want both lines", got)
	}
}

func TestConcurrentLinesStayWhole(t *testing.T) {
	out := &writes{}
	w := logbuf.New(out, 256, time.Millisecond)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				fmt.Fprintf(w, "g%d-%03d-%s\n", g, i, strings.Repeat("x", 20))
			}
		})
	}
	wg.Wait()
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 8*200 {
		t.Fatalf("%d lines, want %d", len(lines), 8*200)
	}
	for _, l := range lines {
		if len(l) != len("g0-000-")+20 {
			t.Fatalf("a line was cut or merged: %q", l)
		}
	}
}

type failing struct{}

func (failing) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestOutputErrorsAreReturned(t *testing.T) {
	w := logbuf.New(failing{}, 64, time.Hour)
	fmt.Fprintln(w, "one")
	if err := w.Flush(); err == nil {
		t.Fatal("Flush hid the output's error")
	}
	if _, err := fmt.Fprintln(w, "two"); err == nil {
		t.Fatal("a write after a failed flush reported success")
	}
}
