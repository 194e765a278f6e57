package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	_ "embed"

	"github.com/labstack/echo/v4"

	"github.com/wxtoken/wxtoken/emulator"
	"github.com/wxtoken/wxtoken/handlers"
	"github.com/wxtoken/wxtoken/keys"
	"github.com/wxtoken/wxtoken/metrics"
	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/token"
	"github.com/wxtoken/wxtoken/wechat"
)

//go:embed openapi.yaml
var openAPISpec []byte

const serveUsage = `Usage: wxtoken serve [--dev] [flags]

Runs the HTTP server. Needs WECHAT_APPID, WECHAT_SECRET (or WECHAT_SECRET_FILE), or WXTOKEN_APPS_FILE
for several mini programs, and a keys directory made by 'wxtoken keys init'. With --dev it needs nothing: a built-in WeChat emulator answers instead of
WeChat and keys are made on first use. See 'wxtoken --help' for every environment variable.

Flags:
`

const devBanner = `
  ************************************************************************
  *  wxtoken DEV MODE: WeChat is EMULATED in this process.               *
  *  Any code logs in. Keys are made on first use. Never use in production.
  ************************************************************************
`

func runServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg := loadConfig(getenv)
	fs := newFlagSet("serve", serveUsage, stdout, stderr)
	cfg.serveFlags(fs)
	if done, err := parseFlags(fs, args, stdout); done {
		return err
	}
	cfg.markFlags(fs)
	var emulatorLn net.Listener
	if cfg.Dev {
		// Dev overrides are made before validation, so the configuration
		// is never changed once it has been checked.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("dev emulator: %w", err)
		}
		defer ln.Close()
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		cfg.applyDev("http://"+ln.Addr().String(), secret.String(hex.EncodeToString(b[:])))
		emulatorLn = ln
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	if err := cfg.resolveSecret(); err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))

	if cfg.Dev {
		stop, err := startDev(cfg, emulatorLn, logger, stderr)
		if err != nil {
			return err
		}
		defer stop()
	} else if cfg.AppsFile == "" && (cfg.AppID == "" || cfg.Secret.Empty()) {
		return errors.New("WECHAT_APPID and WECHAT_SECRET (or WECHAT_SECRET_FILE), or WXTOKEN_APPS_FILE, must be set; for a first try without a WeChat account run: wxtoken serve --dev")
	}

	a, err := newApp(cfg, logger)
	if err != nil {
		return err
	}
	e, store, dir := a.echo, a.store, a.dir

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           e,
		ReadHeaderTimeout: cfg.readHeaderTimeout(),
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.writeTimeout(),
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ConnState:         newConnCap(cfg.MaxConns, logger).track,
	}

	if cfg.MetricsAddr != "" {
		stop, err := serveMetrics(cfg, a.metrics, logger)
		if err != nil {
			return err
		}
		defer stop()
	}

	bg, cancelBG := context.WithCancel(ctx)
	defer cancelBG()
	go store.Watch(bg, cfg.ReloadInterval)
	if a.watchApps != nil {
		go a.watchApps(bg)
	}
	go reloadOnHangup(bg, store, logger)
	if cfg.RotateEvery > 0 {
		go autoRotate(bg, dir, store, cfg.RotateEvery, logger)
	}

	logger.Info("listening", "addr", ln.Addr().String(), "issuer", cfg.Issuer, "appid", cfg.AppID,
		"keys_dir", cfg.KeysDir, "dev", cfg.Dev)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	a.draining.Store(true)
	logger.Info("shutting down: draining in-flight requests", "grace", cfg.ShutdownGrace.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("shutdown: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// app is the wired service, before it listens: tests build one to check
// its routes against openapi.yaml.
type app struct {
	echo     *echo.Echo
	store    *keys.Store
	dir      *keys.Dir
	draining *atomic.Bool
	// metrics serves /metrics, on the main listener or on WXTOKEN_METRICS_ADDR.
	metrics http.Handler
	// watchApps reloads the apps file on change; nil without one.
	watchApps func(context.Context)
}

// newApp wires keys, the WeChat client, the token service and the handlers.
func newApp(cfg *config, logger *slog.Logger) (*app, error) {
	dir := keys.NewDir(cfg.KeysDir, nil)
	store, err := keys.NewStore(dir, cfg.retention(), logger)
	if errors.Is(err, keys.ErrNoKeys) {
		return nil, fmt.Errorf("no keys in %s: run 'wxtoken keys init' first (WXTOKEN_KEYS_DIR=%s)", cfg.KeysDir, cfg.KeysDir)
	}
	if err != nil {
		return nil, fmt.Errorf("load keys: %w", err)
	}

	apps, watchApps, err := servedApps(cfg, logger)
	if err != nil {
		return nil, err
	}

	m, err := metrics.New(metrics.Config{SigningKeySince: func() time.Time { return store.Current().SigningKey().Since }})
	if err != nil {
		return nil, err
	}
	store.OnReload(m.KeyReload)
	// Metrics go on the main listener unless they have one of their own.
	var mainMetrics http.Handler
	if cfg.MetricsAddr == "" {
		mainMetrics = m.Handler()
	}

	client, err := wechat.NewClient(wechat.Config{
		BaseURL:       cfg.APIBase,
		Timeout:       cfg.WeChatTimeout,
		MaxConcurrent: cfg.UpstreamConcurrency,
		Logger:        logger,
		Observer:      m,
	})
	if err != nil {
		return nil, err
	}
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
	draining := new(atomic.Bool)
	e, err := handlers.New(handlers.Config{
		Logger:  logger,
		WeChat:  client,
		Tokens:  tokens,
		Apps:    apps,
		JWKS:    func() ([]byte, string) { return store.Current().JWKS() },
		OpenAPI: openAPISpec,
		Ready: func() error {
			if draining.Load() {
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
		RequestTimeout: cfg.requestTimeout(),
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
	return &app{echo: e, store: store, dir: dir, draining: draining, metrics: m.Handler(),
		watchApps: watchApps}, nil
}

// serveMetrics serves GET /metrics alone on WXTOKEN_METRICS_ADDR, with
// the main listener's bounds on slow clients; stop closes it.
func serveMetrics(cfg *config, h http.Handler, logger *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: cfg.readHeaderTimeout(),
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	go func() { _ = srv.Serve(ln) }()
	logger.Info("metrics listening", "addr", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
}

// keysStaleAfter is how long the keys directory may fail every load before
// /readyz answers 503: two poll intervals. One failed poll can be a CLI
// caught mid-change; after two, this replica may be missing a rotation
// (an emergency one included) that the others have taken.
func keysStaleAfter(reload time.Duration) time.Duration { return 2 * reload }

// startDev starts what dev mode needs, on a configuration applyDev already
// made: keys made on first use, and the WeChat emulator serving on ln, which
// the real WeChat client reaches as WECHAT_API_BASE.
func startDev(cfg *config, ln net.Listener, logger *slog.Logger, stderr io.Writer) (stop func(), err error) {
	fmt.Fprint(stderr, devBanner)
	created, err := keys.NewDir(cfg.KeysDir, nil).Init(defaultSigningAlg)
	if err != nil {
		return nil, fmt.Errorf("dev keys: %w", err)
	}
	if created {
		logger.Warn("dev mode: created keys", "keys_dir", cfg.KeysDir)
	}
	emu := emulator.New(emulator.Config{
		Apps:      map[string]string{cfg.AppID: cfg.Secret.Reveal()},
		AnySecret: cfg.Secret.Reveal(),
		UnionID:   true,
		Logger:    logger.With("component", "emulator"),
	})
	srv := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	logger.Warn("DEV MODE: WeChat is emulated; any code logs in; never use in production",
		"appid", cfg.AppID, "emulator", cfg.APIBase)
	return func() { _ = srv.Close() }, nil
}

// reloadOnHangup re-reads the keys directory on SIGHUP, for operators who
// would rather not wait for the next poll.
func reloadOnHangup(ctx context.Context, store *keys.Store, logger *slog.Logger) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			logger.Info("SIGHUP: reloading keys")
			_ = store.Reload()
		}
	}
}

// autoRotate rotates the keys every period. Replicas sharing the directory
// all run it; the directory lock in RotateIfDue makes exactly one rotate.
func autoRotate(ctx context.Context, dir *keys.Dir, store *keys.Store, every time.Duration, logger *slog.Logger) {
	check := every / 10
	if check > time.Minute {
		check = time.Minute
	}
	if check < 100*time.Millisecond {
		check = 100 * time.Millisecond
	}
	t := time.NewTicker(check)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rotated, err := dir.RotateIfDue(every)
			if err != nil {
				logger.Error("automatic key rotation failed", "err", err.Error())
				continue
			}
			if rotated {
				logger.Info("automatic key rotation done")
				_ = store.Reload()
			}
		}
	}
}
