// Package server wires wxtoken's parts into one HTTP server: the keys store
// and its reload and rotation, the WeChat client, the token service, the
// handlers, the metrics and, in dev mode, the WeChat emulator. It is built
// from a validated Config and explicit dependencies, serves on a listener
// its caller opens, and shuts down gracefully:
//
//	srv, err := server.New(cfg, server.Deps{Logger: logger, Apps: apps})
//	go srv.Serve(ln)
//	<-ctx.Done()
//	err = srv.Shutdown(shutdownCtx)
//
// It reads no environment and parses no flags: package main does.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	// Importing it also registers the profiles on http.DefaultServeMux; nothing
	// here serves that mux (never pass a nil handler to a server), and the
	// handlers are routed explicitly on the metrics listener only.
	"net/http/pprof"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wxtoken/wxtoken/emulator"
	"github.com/wxtoken/wxtoken/handlers"
	"github.com/wxtoken/wxtoken/keys"
	"github.com/wxtoken/wxtoken/metrics"
	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/token"
	"github.com/wxtoken/wxtoken/wechat"
)

// maxHeaderBytes bounds a request's headers on every listener.
const maxHeaderBytes = 32 << 10

// Config is the server's settings, already validated by the caller: New
// checks only what it needs to build the parts.
type Config struct {
	// Issuer is the iss claim and the base of the discovery documents.
	Issuer string
	// AppID is the single app's appid ("" with an apps file); in dev mode,
	// the app the emulator knows. Logged at start.
	AppID string
	// KeysDir is the keys directory; Retention how long a retired key
	// stays usable (token lifetime, leeway and slack).
	KeysDir   string
	Retention time.Duration
	// ReloadInterval is how often the keys directory is polled; RotateEvery,
	// when positive, the automatic rotation period.
	ReloadInterval time.Duration
	RotateEvery    time.Duration

	TokenTTL          time.Duration
	Leeway            time.Duration
	TokenCacheEntries int

	WeChatAPIBase       string
	WeChatTimeout       time.Duration
	UpstreamConcurrency int

	LoginRate      float64
	LoginBurst     int
	UserRate       float64
	UserBurst      int
	AuthFailRate   float64
	AuthFailBurst  int
	TrustedProxies []*net.IPNet
	JWKSMaxAge     time.Duration
	// RequestTimeout bounds the WeChat work of one request.
	RequestTimeout time.Duration

	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	// MaxConns caps the open connections (see connCap).
	MaxConns int
	// Pprof serves net/http/pprof's profiles under /debug/pprof/ on the
	// metrics listener (never on the API's; New refuses it without one),
	// so an operator can profile a live replica as the README's
	// performance section was profiled.
	Pprof bool

	// OpenAPI is the spec served at /openapi.yaml.
	OpenAPI []byte

	// Dev emulates WeChat in this process and makes keys on first use, of
	// algorithm DevKeyAlg; the emulator accepts DevSecret for any app.
	Dev       bool
	DevKeyAlg string
	DevSecret secret.String
}

// Deps are what the server uses but does not build.
type Deps struct {
	Logger *slog.Logger
	// Apps are the mini programs served.
	Apps handlers.Apps
	// WatchApps, when set, keeps Apps current until its context ends (the
	// apps file watcher); the server runs it while serving.
	WatchApps func(context.Context)
	// MetricsListener, when set, serves GET /metrics (and, with
	// Config.Pprof, /debug/pprof/) and nothing else; nil puts
	// /metrics on the main listener.
	MetricsListener net.Listener
	// Emulator is where the dev-mode WeChat emulator serves, the address
	// Config.WeChatAPIBase names; required with Config.Dev.
	Emulator net.Listener
}

// Server is the wired service.
type Server struct {
	cfg    Config
	deps   Deps
	logger *slog.Logger
	store  *keys.Store
	http   *http.Server
	// metrics serves the metrics listener; nil without one.
	metrics *http.Server
	// emulator serves the dev-mode emulator; nil outside dev mode.
	emulator *http.Server
	handler  *handlers.Handler
	draining atomic.Bool

	startOnce sync.Once
	stopBG    context.CancelFunc
	// bg counts the background loops (keys, apps), so Shutdown returns only
	// once a rotation or reload under way has finished.
	bg sync.WaitGroup
	// hangup receives SIGHUP from the moment Serve starts (before it logs
	// "listening"), so none sent once the server listens is missed. Between
	// New and Serve a SIGHUP still has its default effect: the process ends.
	hangup chan os.Signal
}

// New builds every part from cfg. A keys directory without keys fails with
// an error matching keys.ErrNoKeys.
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.Logger == nil || deps.Apps == nil {
		return nil, errors.New("server: a logger and apps are required")
	}
	if cfg.Dev && deps.Emulator == nil {
		return nil, errors.New("server: dev mode needs a listener for the emulator")
	}
	// Every line logged with a request's context carries its request id,
	// the WeChat client's and the token service's included.
	logger := slog.New(handlers.LogHandler(deps.Logger.Handler()))
	s := &Server{cfg: cfg, deps: deps, logger: logger}
	if cfg.Dev {
		if err := s.initDev(); err != nil {
			return nil, err
		}
	}

	dir := keys.NewDir(cfg.KeysDir, cfg.Retention, nil)
	store, err := keys.NewStore(dir, logger)
	if err != nil {
		return nil, fmt.Errorf("load keys: %w", err)
	}
	s.store = store

	m, err := metrics.New(metrics.Config{SigningKeySince: func() time.Time { return store.Current().SigningKey().Since }})
	if err != nil {
		return nil, err
	}
	store.OnReload(m.KeyReload)
	if cfg.Pprof && deps.MetricsListener == nil {
		return nil, errors.New("server: pprof is served only on a metrics listener of its own")
	}
	// Metrics go on the main listener unless they have one of their own.
	var mainMetrics http.Handler
	if deps.MetricsListener == nil {
		mainMetrics = m.Handler()
	} else {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", m.Handler())
		writeTimeout := 30 * time.Second
		if cfg.Pprof {
			mux.HandleFunc("GET /debug/pprof/", pprof.Index)
			mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
			mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
			// A CPU profile or trace answers after its seconds (30 by
			// default); pprof refuses one longer than the write timeout.
			writeTimeout = 2 * time.Minute
		}
		s.metrics = &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: cfg.ReadHeaderTimeout,
			ReadTimeout:       cfg.ReadTimeout,
			WriteTimeout:      writeTimeout,
			IdleTimeout:       cfg.IdleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		}
	}

	client, err := wechat.NewClient(wechat.Config{
		BaseURL:       cfg.WeChatAPIBase,
		Timeout:       cfg.WeChatTimeout,
		MaxConcurrent: cfg.UpstreamConcurrency,
		Logger:        logger,
		Observer:      m,
	})
	if err != nil {
		return nil, err
	}
	apps := deps.Apps
	tokens, err := token.New(token.Config{
		Issuer: cfg.Issuer,
		TTL:    cfg.TokenTTL,
		Leeway: cfg.Leeway,
		Accept: func(appid string) bool {
			_, ok := apps.Lookup(appid)
			return ok
		},
		Keys: store,
		// Verified tokens are kept (bounded, dropped on any key reload) so
		// a token's signature is checked once, not on every bearer call.
		CacheEntries: cfg.TokenCacheEntries,
		Observe:      m.Verified,
	})
	if err != nil {
		return nil, err
	}
	h, err := handlers.New(handlers.Config{
		Logger:  logger,
		WeChat:  client,
		Tokens:  tokens,
		Apps:    apps,
		JWKS:    func() ([]byte, string) { return store.Current().JWKS() },
		OpenAPI: cfg.OpenAPI,
		Ready: func() error {
			if s.draining.Load() {
				return errors.New("shutting down")
			}
			return store.Stale(keysStaleAfter(cfg.ReloadInterval))
		},
		Dev:            cfg.Dev,
		LoginRate:      cfg.LoginRate,
		LoginBurst:     cfg.LoginBurst,
		UserRate:       cfg.UserRate,
		UserBurst:      cfg.UserBurst,
		AuthFailRate:   cfg.AuthFailRate,
		AuthFailBurst:  cfg.AuthFailBurst,
		RequestTimeout: cfg.RequestTimeout,
		TrustedProxies: cfg.TrustedProxies,
		JWKSMaxAge:     cfg.JWKSMaxAge,
		Issuer:         cfg.Issuer,
		Algorithms:     func() []string { return store.Current().Algorithms() },
		Observer:       m,
		Metrics:        mainMetrics,
	})
	if err != nil {
		return nil, err
	}
	s.handler = h
	s.http = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		ConnState:         newConnCap(cfg.MaxConns, logger).track,
	}
	return s, nil
}

// Routes is the API's route table, for checking it against openapi.yaml.
func (s *Server) Routes() []handlers.Route { return s.handler.Routes() }

// Serve starts the background work (key reload and rotation, the apps
// watcher, the metrics listener, the dev emulator) and serves the API on ln
// until Shutdown, after which it returns http.ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error {
	s.startOnce.Do(s.start)
	s.logger.Info("listening", "addr", ln.Addr().String(), "issuer", s.cfg.Issuer, "appid", s.cfg.AppID,
		"keys_dir", s.cfg.KeysDir, "dev", s.cfg.Dev)
	return s.http.Serve(ln)
}

// start runs everything that serves beside the API.
func (s *Server) start() {
	bg, cancel := context.WithCancel(context.Background())
	s.stopBG = cancel
	if s.emulator != nil {
		go func() { _ = s.emulator.Serve(s.deps.Emulator) }()
	}
	if s.metrics != nil {
		go func() { _ = s.metrics.Serve(s.deps.MetricsListener) }()
		s.logger.Info("metrics listening", "addr", s.deps.MetricsListener.Addr().String())
	}
	s.hangup = make(chan os.Signal, 1)
	signal.Notify(s.hangup, syscall.SIGHUP)
	s.bg.Go(func() {
		s.store.Run(bg, keys.Policy{ReloadInterval: s.cfg.ReloadInterval, RotateEvery: s.cfg.RotateEvery, Hangup: s.hangup})
	})
	if s.deps.WatchApps != nil {
		s.bg.Go(func() { s.deps.WatchApps(bg) })
	}
}

// Shutdown marks the server draining (/readyz answers 503), lets in-flight
// requests finish until ctx ends, closes what is left and stops the
// background work, the metrics listener and the emulator.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	err := s.http.Shutdown(ctx)
	if err != nil {
		_ = s.http.Close()
	}
	s.startOnce.Do(func() {}) // never start once shut down
	if s.stopBG != nil {
		s.stopBG()
		signal.Stop(s.hangup)
		done := make(chan struct{})
		go func() { s.bg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	if s.metrics != nil {
		_ = s.metrics.Close()
	}
	if s.emulator != nil {
		_ = s.emulator.Close()
	}
	return err
}

// keysStaleAfter is how long the keys directory may fail every load before
// /readyz answers 503: two poll intervals. One failed poll can be a CLI
// caught mid-change; after two, this replica may be missing a rotation
// (an emergency one included) that the others have taken.
func keysStaleAfter(reload time.Duration) time.Duration { return 2 * reload }

// initDev prepares what dev mode needs: keys made on first use, and the
// WeChat emulator, which the real WeChat client reaches as WeChatAPIBase.
func (s *Server) initDev() error {
	created, err := keys.NewDir(s.cfg.KeysDir, s.cfg.Retention, nil).Init(s.cfg.DevKeyAlg)
	if err != nil {
		return fmt.Errorf("dev keys: %w", err)
	}
	if created {
		s.logger.Warn("dev mode: created keys", "keys_dir", s.cfg.KeysDir)
	}
	emu := emulator.New(emulator.Config{
		Apps:      map[string]string{s.cfg.AppID: s.cfg.DevSecret.Reveal()},
		AnySecret: s.cfg.DevSecret.Reveal(),
		UnionID:   true,
		Logger:    s.logger.With("component", "emulator"),
	})
	s.emulator = &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	s.logger.Warn("DEV MODE: WeChat is emulated; any code logs in; never use in production",
		"appid", s.cfg.AppID, "emulator", s.cfg.WeChatAPIBase)
	return nil
}
