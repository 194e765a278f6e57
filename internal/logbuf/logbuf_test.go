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

// flaky fails its first write, then works.
type flaky struct {
	writes
	failed bool
}

func (f *flaky) Write(p []byte) (int, error) {
	if !f.failed {
		f.failed = true
		return 0, errors.New("disk full")
	}
	return f.writes.Write(p)
}

// TestAFailedWriteDoesNotSilenceLaterLines: the batch that failed is lost
// and its error returned, but later lines are written once out recovers.
func TestAFailedWriteDoesNotSilenceLaterLines(t *testing.T) {
	out := &flaky{}
	w := logbuf.New(out, 64, time.Hour)
	fmt.Fprintln(w, "lost")
	if err := w.Flush(); err == nil {
		t.Fatal("Flush hid the output's error")
	}
	fmt.Fprintln(w, "after")
	if err := w.Flush(); err != nil {
		t.Fatalf("Flush after the output recovered: %v", err)
	}
	if got := out.String(); got != "after\n" {
		t.Fatalf("written %q, want the line logged after the failure", got)
	}
}

// TestCloseFlushesAndWritesThrough: lines logged after Close (a request
// finishing as the process exits) go out at once.
func TestCloseFlushesAndWritesThrough(t *testing.T) {
	out := &writes{}
	w := logbuf.New(out, 4096, time.Hour)
	fmt.Fprintln(w, "before")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if out.String() != "before\n" {
		t.Fatalf("after Close: %q", out.String())
	}
	fmt.Fprintln(w, "late")
	if out.String() != "before\nlate\n" {
		t.Fatalf("a line after Close was held: %q", out.String())
	}
}
