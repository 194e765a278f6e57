package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRequestIDOnEveryLogLine: the id a client sends in X-Request-Id is on
// every line its request logs, exactly once: the access log, a handler's
// own line and the WeChat client's, which is given only the request's
// context.
func TestRequestIDOnEveryLogLine(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	s := startServer(t, f.env.with("WXTOKEN_LOG_LEVEL", "debug"))
	send := func(path, id, bearer, body string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, s.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Request-Id", id)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	send("/v1/login", "rid-login-1", "", `{"code":"rid-code"}`)
	send("/v1/session/check", "rid-bearer-1", "not-a-token", `{}`)

	// logged reports whether a line with msg carries id, and fails the
	// test on a line that carries request_id more than once.
	logged := func(t *testing.T, msg, id string) bool {
		for _, line := range strings.Split(s.logs.String(), "\n") {
			if n := strings.Count(line, `"request_id"`); n > 1 {
				t.Fatalf("request_id logged %d times: %s", n, line)
			}
			var rec struct {
				Msg       string `json:"msg"`
				RequestID string `json:"request_id"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == msg && rec.RequestID == id {
				return true
			}
		}
		return false
	}
	for _, tc := range []struct{ name, msg, id string }{
		{"access log of a login", "request", "rid-login-1"},
		{"the WeChat client's line, given only the context", "wechat call", "rid-login-1"},
		{"a handler's own line", "token refused", "rid-bearer-1"},
		{"access log of a refused bearer", "request", "rid-bearer-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eventually(t, 10*time.Second, tc.msg+" with "+tc.id, func() bool { return logged(t, tc.msg, tc.id) })
		})
	}
}
