package handlers

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/wxtoken/wxtoken/internal/syncbuf"
)

// TestFrameRecoversPanics: a handler's panic answers a 500 problem with the
// request's id and security headers, is logged (its type, not its value)
// under that id, and is observed and logged as a 500 like any answer.
func TestFrameRecoversPanics(t *testing.T) {
	var logs syncbuf.Buffer
	logger := slog.New(LogHandler(slog.NewJSONHandler(&logs, nil)))
	rec := &recordedRequests{}
	h := &server{cfg: Config{Logger: logger, Observer: rec, Now: time.Now}, routes: map[string]bool{"/boom": true}}
	e := echo.New()
	e.HTTPErrorHandler = errorHandler(logger)
	e.Use(h.frame)
	e.GET("/boom", func(echo.Context) error { panic("the secret value 42") })

	w := httptest.NewRecorder()
	e.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/boom", nil))
	if w.Code != http.StatusInternalServerError || !strings.HasPrefix(w.Header().Get("Content-Type"), "application/problem+json") {
		t.Fatalf("panic answered %d %q: %s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
	id := w.Header().Get(echo.HeaderXRequestID)
	if len(id) != 32 || w.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("headers of the 500: %v", w.Header())
	}
	if strings.Contains(w.Body.String(), "secret value") || strings.Contains(logs.String(), "secret value") {
		t.Fatal("the panic's value reached the answer or the logs")
	}
	var sawPanic, sawAccess bool
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var l struct {
			Msg       string `json:"msg"`
			RequestID string `json:"request_id"`
			Status    int    `json:"status"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		sawPanic = sawPanic || l.Msg == "panic in handler" && l.RequestID == id
		sawAccess = sawAccess || l.Msg == "request" && l.RequestID == id && l.Status == 500
	}
	if !sawPanic || !sawAccess {
		t.Fatalf("logs lack the panic or the access line under id %s:\n%s", id, logs.String())
	}
	if len(rec.statuses) != 1 || rec.statuses[0] != 500 || rec.routes[0] != "/boom" {
		t.Fatalf("observed %v %v, want one 500 on /boom", rec.routes, rec.statuses)
	}
}

// TestRequestIDsAreFresh: ids made here are 32 hex characters and differ.
func TestRequestIDsAreFresh(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newRequestID()
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" || seen[id] {
			t.Fatalf("request id %q (seen before: %v)", id, seen[id])
		}
		seen[id] = true
	}
}

type recordedRequests struct {
	routes   []string
	statuses []int
}

func (r *recordedRequests) Request(route, _ string, status int, _ time.Duration) {
	r.routes = append(r.routes, route)
	r.statuses = append(r.statuses, status)
}
func (r *recordedRequests) RateLimited(string) {}

// firstRead records how large a buffer the first Read was handed, then
// fails like a client that stalled until the read timeout.
type firstRead struct{ size int }

func (f *firstRead) Read(p []byte) (int, error) {
	if f.size == 0 {
		f.size = len(p)
	}
	return 0, io.ErrUnexpectedEOF
}

// TestDeclaredLengthIsNotTrustedForMemory: a body declared large is read
// into a buffer that grows as bytes arrive, so a client declaring 60 KB
// and sending nothing holds a few hundred bytes, not 60 KB; a small one is
// read into a buffer of exactly its size.
func TestDeclaredLengthIsNotTrustedForMemory(t *testing.T) {
	for _, tc := range []struct {
		declared int64
		most     int
	}{{60_000, 4096}, {5_000, 4096}, {300, 300}} {
		body := &firstRead{}
		req := httptest.NewRequest(http.MethodPost, "/v1/login", body)
		req.ContentLength = tc.declared
		if _, err := readBody(httptest.NewRecorder(), req); err == nil {
			t.Fatalf("declared %d: a failed read returned a body", tc.declared)
		}
		if body.size == 0 || body.size > tc.most {
			t.Errorf("declared %d: first read into %d bytes, want at most %d", tc.declared, body.size, tc.most)
		}
	}
}

// TestFrameHeadersOnEveryAnswer: not-found, wrong-method and OPTIONS
// answers carry the request id and security headers too.
func TestFrameHeadersOnEveryAnswer(t *testing.T) {
	var logs syncbuf.Buffer
	logger := slog.New(LogHandler(slog.NewJSONHandler(&logs, nil)))
	h := &server{cfg: Config{Logger: logger, Observer: noObserver{}, Now: time.Now}, routes: map[string]bool{"/v1/thing": true}}
	e := echo.New()
	e.HTTPErrorHandler = errorHandler(logger)
	e.Use(h.frame)
	e.POST("/v1/thing", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) })
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/nowhere", http.StatusNotFound},
		{http.MethodGet, "/v1/thing", http.StatusMethodNotAllowed},
		{http.MethodOptions, "/v1/thing", http.StatusNoContent},
		{http.MethodPost, "/v1/thing?code=secret-code", http.StatusNoContent},
	} {
		w := httptest.NewRecorder()
		e.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
		if w.Code != tc.status || len(w.Header().Get(echo.HeaderXRequestID)) != 32 ||
			w.Header().Get("X-Content-Type-Options") != "nosniff" || w.Header().Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s %s: %d, headers %v", tc.method, tc.path, w.Code, w.Header())
		}
	}
	if strings.Contains(logs.String(), "secret-code") {
		t.Error("a query string reached the access log")
	}
}
