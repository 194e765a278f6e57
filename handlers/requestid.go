package handlers

import (
	"context"
	"log/slog"
)

// requestIDKey is the context key of a request's id.
type requestIDKey struct{}

// withRequestID returns ctx carrying the request id, so that everything
// the request calls logs it without being handed it.
func withRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// requestID is the id of the request ctx belongs to; "" outside one.
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// LogHandler wraps h so that every record logged with a request's context
// carries its request_id: the handlers' lines and those of every package the
// request calls with its context (the WeChat client's included). Wrapping a
// handler LogHandler made already returns it as it is, so an id is never
// added twice.
func LogHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(requestIDHandler); ok {
		return h
	}
	return requestIDHandler{next: h, base: h}
}

// requestIDHandler adds request_id to records whose context has one, at
// the top level of the record. Without groups that is one attribute more on
// the record; once a group is open (WithGroup), the record's attributes
// would land inside it, so the id goes on the unwrapped handler first and
// the groups and attributes are replayed after it.
type requestIDHandler struct {
	next slog.Handler
	// base and ops are the handler before any WithAttrs/WithGroup and
	// those calls, in order; kept only once a group is open.
	base    slog.Handler
	ops     []func(slog.Handler) slog.Handler
	grouped bool
}

func (h requestIDHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

func (h requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	id := requestID(ctx)
	if id == "" {
		return h.next.Handle(ctx, r)
	}
	if !h.grouped {
		r = r.Clone()
		r.AddAttrs(slog.String("request_id", id))
		return h.next.Handle(ctx, r)
	}
	next := h.base.WithAttrs([]slog.Attr{slog.String("request_id", id)})
	for _, op := range h.ops {
		next = op(next)
	}
	return next.Handle(ctx, r)
}

func (h requestIDHandler) with(op func(slog.Handler) slog.Handler, group bool) slog.Handler {
	ops := append(append([]func(slog.Handler) slog.Handler(nil), h.ops...), op)
	return requestIDHandler{next: op(h.next), base: h.base, ops: ops, grouped: h.grouped || group}
}

func (h requestIDHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return h.with(func(n slog.Handler) slog.Handler { return n.WithAttrs(attrs) }, false)
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return h.with(func(n slog.Handler) slog.Handler { return n.WithGroup(name) }, true)
}
