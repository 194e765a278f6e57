package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/wxtoken/wxtoken/emulator"
)

// Environment variables the orchestrator hands its children: the appsecret
// stays out of the command line, where ps would show it.
const envSecret = "WXTOKEN_BENCH_WECHAT_SECRET"

// sessionKeyPath is the emulator's side route that tells the bench a user's
// current session_key, which WeChat gives only to the server that logged the
// user in. The bench needs it to make encryptedData that the user's session
// can open, for the table and wxtoken alike.
const sessionKeyPath = "/_bench/session-key"

// serveEmulator runs package emulator as WeChat for every contender until
// ctx ends. Any js_code logs in once as a user of its own (codes are
// single-use, as at WeChat), so each login of the load carries a new code.
func serveEmulator(ctx context.Context, o *options, getenv func(string) string) error {
	secret := getenv(envSecret)
	if o.AppID == "" || secret == "" || o.Addr == "" {
		return errors.New("emulator: -appid, -addr and " + envSecret + " are required")
	}
	emu := emulator.New(emulator.Config{Apps: map[string]string{o.AppID: secret}})
	mux := http.NewServeMux()
	mux.Handle("/", emu)
	mux.HandleFunc("GET "+sessionKeyPath, func(w http.ResponseWriter, r *http.Request) {
		sk := emu.CurrentSessionKey(r.URL.Query().Get("appid"), r.URL.Query().Get("openid"))
		if sk == "" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, sk)
	})
	return serveUntil(ctx, o.Addr, mux)
}

// serveUntil serves h on addr until ctx ends, with the timeouts every
// server of the bench uses.
func serveUntil(ctx context.Context, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shut)
}
