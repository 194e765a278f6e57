// Package logbuf batches log lines into few writes.
//
// wxtoken logs one line per request. Written straight to stderr, each line
// is a write system call, and on a busy replica those calls cost more than
// the logging itself (about a twentieth of a cached bearer call's CPU in the
// benchmark). A Writer gathers lines in memory and writes them out when its
// buffer fills, at most Delay after the first line it holds, before any
// line at or above an urgent level (warnings and errors are never held
// back), and on Close. What a crash can lose is the last Delay of lines.
package logbuf

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Delay is how long a line may wait in the buffer.
const Delay = 100 * time.Millisecond

// Writer is an io.Writer that batches whole writes (log lines) into few
// writes to out. It is safe for concurrent use; a line is never split
// unless it is larger than the buffer.
type Writer struct {
	mu      sync.Mutex
	out     io.Writer
	buf     *bufio.Writer
	delay   time.Duration
	pending *time.Timer // armed while the buffer holds a line
	closed  bool        // after Close every line is written at once
}

// New returns a Writer to out with a buffer of size bytes and lines held at
// most delay.
func New(out io.Writer, size int, delay time.Duration) *Writer {
	return &Writer{out: out, buf: bufio.NewWriterSize(out, size), delay: delay}
}

// Write buffers p; it writes out what was buffered first when p does not
// fit beside it. After Close it writes p at once.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.out.Write(p)
	}
	if len(p) > w.buf.Available() && w.buf.Buffered() > 0 {
		if err := w.flushLocked(); err != nil {
			return 0, err
		}
	}
	n, err := w.buf.Write(p)
	if err != nil {
		// A line larger than the buffer went straight out and failed.
		w.buf.Reset(w.out)
		return n, err
	}
	if w.buf.Buffered() > 0 && w.pending == nil {
		w.pending = time.AfterFunc(w.delay, func() { _ = w.Flush() })
	}
	return n, nil
}

// Flush writes out every buffered line now.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flushLocked()
}

// Close writes out every buffered line and makes later writes go out at
// once: lines logged while a process exits (a request finishing after the
// shutdown grace) are not left in a buffer nobody flushes.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	err := w.flushLocked()
	w.closed = true
	return err
}

// flushLocked writes the buffer out. When out fails, the batch is dropped
// and the error returned, but the Writer goes on: a disk that was full for
// a moment must not silence every later line, errors included.
func (w *Writer) flushLocked() error {
	if w.pending != nil {
		w.pending.Stop()
		w.pending = nil
	}
	if err := w.buf.Flush(); err != nil {
		w.buf.Reset(w.out)
		return err
	}
	return nil
}

// Urgent wraps h, which writes to w, so that a record at level or above
// goes out at once, with every line logged before it.
func Urgent(h slog.Handler, w *Writer, level slog.Level) slog.Handler {
	return &urgent{Handler: h, w: w, level: level}
}

type urgent struct {
	slog.Handler
	w     *Writer
	level slog.Level
}

func (u *urgent) Handle(ctx context.Context, r slog.Record) error {
	err := u.Handler.Handle(ctx, r)
	if r.Level >= u.level {
		if ferr := u.w.Flush(); err == nil {
			err = ferr
		}
	}
	return err
}

func (u *urgent) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &urgent{Handler: u.Handler.WithAttrs(attrs), w: u.w, level: u.level}
}

func (u *urgent) WithGroup(name string) slog.Handler {
	return &urgent{Handler: u.Handler.WithGroup(name), w: u.w, level: u.level}
}
