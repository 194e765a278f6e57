package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
)

// TestRequestIDStaysTopLevel: the request id is a top-level field of every
// line, whatever groups and attributes the logger was given before.
func TestRequestIDStaysTopLevel(t *testing.T) {
	ctx := withRequestID(context.Background(), "rid-1")
	for _, tt := range []struct {
		name string
		log  func(*slog.Logger)
	}{
		{"plain", func(l *slog.Logger) { l.InfoContext(ctx, "m", "op", "x") }},
		{"with attrs", func(l *slog.Logger) { l.With("component", "wechat").InfoContext(ctx, "m", "op", "x") }},
		{"in a group", func(l *slog.Logger) { l.WithGroup("wechat").InfoContext(ctx, "m", "op", "x") }},
		{"attrs then group", func(l *slog.Logger) {
			l.With("component", "c").WithGroup("wechat").With("api", "a").InfoContext(ctx, "m", "op", "x")
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tt.log(slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))))
			var line map[string]any
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatalf("%v: %s", err, buf.Bytes())
			}
			if line["request_id"] != "rid-1" {
				t.Errorf("request_id not at the top level: %s", buf.Bytes())
			}
			if bytes.Count(buf.Bytes(), []byte("request_id")) != 1 {
				t.Errorf("request_id not exactly once: %s", buf.Bytes())
			}
		})
	}
	var buf bytes.Buffer
	slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))).WithGroup("g").Info("outside a request")
	if bytes.Contains(buf.Bytes(), []byte("request_id")) {
		t.Errorf("a line outside a request has a request_id: %s", buf.Bytes())
	}
}
