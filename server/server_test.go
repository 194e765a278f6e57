package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/handlers"
	"github.com/wxtoken/wxtoken/internal/wxtest"
	"github.com/wxtoken/wxtoken/keys"
	"github.com/wxtoken/wxtoken/server"
	"github.com/wxtoken/wxtoken/wechat"
)

// oneApp serves a single app.
type oneApp struct{}

var _ handlers.Apps = oneApp{}

func (oneApp) Lookup(appid string) (wechat.Credentials, bool) {
	return wechat.Credentials{AppID: appid, Secret: "s3cr3t"}, appid == "wx1111222233334444"
}
func (oneApp) Default() string                  { return "wx1111222233334444" }
func (oneApp) Policy(string) handlers.AppPolicy { return handlers.AppPolicy{} }

// mustServer builds a server for oneApp on a fresh keys directory, with
// these header and read timeouts.
func mustServer(t *testing.T, readHeader, read time.Duration) *server.Server {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	if _, err := keys.NewDir(dir, time.Hour, nil).Init(keys.ES256); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{
		Issuer: "http://127.0.0.1", KeysDir: dir, Retention: time.Hour, ReloadInterval: time.Second,
		TokenTTL: time.Hour, Leeway: time.Second, WeChatAPIBase: "http://127.0.0.1:1", WeChatTimeout: time.Second,
		UpstreamConcurrency: 4, RequestTimeout: time.Second, ReadHeaderTimeout: readHeader,
		ReadTimeout: read, WriteTimeout: 5 * time.Second, IdleTimeout: time.Second, MaxConns: 10,
		OpenAPI: []byte("openapi: 3.1.0\n"),
	}, server.Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Apps: oneApp{}})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// serve serves srv on a loopback listener until the test ends and returns
// the listener's address.
func serve(t *testing.T, srv *server.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Shutdown(context.Background())
		<-served
	})
	return ln.Addr().String()
}

// TestSlowHeadersAreCutOff: a client that never finishes its headers
// (slowloris) is cut off at the header timeout, long before the read
// timeout, while others are served; a header block over the cap is refused
// with 431 before any handler runs.
func TestSlowHeadersAreCutOff(t *testing.T) {
	t.Parallel()
	addr := serve(t, mustServer(t, 300*time.Millisecond, 20*time.Second))
	conn := wxtest.RawConn(t, addr, "POST /v1/login HTTP/1.1\r\nHost: wxtoken\r\nContent-Type: application/json\r\n")
	if a := wxtest.Send(t, http.MethodGet, "http://"+addr+"/healthz", nil, nil); a.Status != http.StatusOK {
		t.Fatalf("healthz while a slow client waits: %d", a.Status)
	}
	if held := wxtest.HeldOpen(t, conn, false); held > 5*time.Second {
		t.Fatalf("the slow connection was closed after %v: the 20 s read timeout cut it, not the 300ms header timeout", held)
	}
	a := wxtest.Send(t, http.MethodGet, "http://"+addr+"/healthz", nil, map[string]string{"X-Padding": strings.Repeat("a", 64<<10)})
	if a.Status != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("a 64 KiB header: %d, want 431", a.Status)
	}
}

// TestServeAndShutdown: the server serves on the listener its caller
// opened, lists its routes, and Shutdown makes Serve return
// http.ErrServerClosed and closes the listener.
func TestServeAndShutdown(t *testing.T) {
	srv := mustServer(t, time.Second, time.Second)
	if !slices.Contains(srv.Routes(), handlers.Route{Method: http.MethodPost, Path: "/v1/login"}) {
		t.Errorf("routes lack POST /v1/login: %v", srv.Routes())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
		}
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("the listener is still open after Shutdown")
	}
}

// TestNewWithoutKeys: an empty keys directory is keys.ErrNoKeys, for
// the caller's advice to run 'wxtoken keys init'.
func TestNewWithoutKeys(t *testing.T) {
	_, err := server.New(server.Config{KeysDir: t.TempDir(), MaxConns: 1},
		server.Deps{Logger: slog.New(slog.DiscardHandler), Apps: oneApp{}})
	if !errors.Is(err, keys.ErrNoKeys) {
		t.Errorf("New on an empty directory: %v, want keys.ErrNoKeys", err)
	}
}

// TestPprofNeedsItsOwnListener: profiles are never served on the API's
// listener, whatever the caller's config says.
func TestPprofNeedsItsOwnListener(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	if _, err := keys.NewDir(dir, time.Hour, nil).Init(keys.ES256); err != nil {
		t.Fatal(err)
	}
	_, err := server.New(server.Config{
		Issuer: "http://127.0.0.1", KeysDir: dir, Retention: time.Hour, ReloadInterval: time.Second,
		TokenTTL: time.Hour, Leeway: time.Second, WeChatAPIBase: "http://127.0.0.1:1", WeChatTimeout: time.Second,
		UpstreamConcurrency: 4, RequestTimeout: time.Second, ReadHeaderTimeout: time.Second,
		ReadTimeout: time.Second, WriteTimeout: 5 * time.Second, IdleTimeout: time.Second, MaxConns: 10,
		Pprof: true,
	}, server.Deps{Logger: slog.New(slog.DiscardHandler), Apps: oneApp{}})
	if err == nil || !strings.Contains(err.Error(), "pprof") {
		t.Fatalf("New with pprof and no metrics listener: %v, want a refusal", err)
	}
}
