// Command downstream is a small service that accepts wxtoken access tokens
// with the verify package: it is what a team running another service next
// to wxtoken writes. It knows only the issuer and the appids it serves.
//
//	WXTOKEN_ISSUER=https://auth.example.com WECHAT_APPID=wx1234567890abcdef \
//	  go run ./examples/downstream
//	curl -H "Authorization: Bearer $TOKEN" localhost:8081/me
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/wxtoken/wxtoken/verify"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "downstream:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends. DOWNSTREAM_ADDR (default 127.0.0.1:8081) is
// where it listens; WXTOKEN_ISSUER and WECHAT_APPID (comma-separated for
// several mini programs) say which tokens it accepts.
func run(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	logger := slog.New(slog.NewJSONHandler(stderr, nil))
	issuer, appids := getenv("WXTOKEN_ISSUER"), strings.Split(getenv("WECHAT_APPID"), ",")
	if issuer == "" || getenv("WECHAT_APPID") == "" {
		return errors.New("WXTOKEN_ISSUER and WECHAT_APPID must be set")
	}
	addr := getenv("DOWNSTREAM_ADDR")
	if addr == "" {
		addr = "127.0.0.1:8081"
	}
	v, err := verify.New(ctx, verify.Config{Issuer: issuer, AppIDs: appids})
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.Handle("GET /me", v.Middleware("downstream")(http.HandlerFunc(me)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 15 * time.Second, IdleTimeout: time.Minute}
	logger.Info("listening", "addr", ln.Addr().String(), "issuer", issuer)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

// me answers who the token speaks for.
func me(w http.ResponseWriter, r *http.Request) {
	c, _ := verify.ClaimsFrom(r.Context())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]string{
		"openid": c.OpenID, "unionid": c.UnionID, "appid": c.AppID, "jti": c.ID,
	})
}
