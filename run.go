package main

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/wxtoken/wxtoken/apps"
	"github.com/wxtoken/wxtoken/handlers"
	"github.com/wxtoken/wxtoken/internal/logbuf"
	"github.com/wxtoken/wxtoken/keys"
	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/server"
	"github.com/wxtoken/wxtoken/wechat"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `wxtoken turns a WeChat mini program's wx.login() code into a signed, stateless JWT.

Usage:
  wxtoken serve [--dev] [flags]      run the HTTP server
  wxtoken keys init [--alg ALG]      create the keys directory (ES256, EdDSA or RS256)
  wxtoken keys rotate [--now]        next key becomes active, active retires, a new next key is made
  wxtoken keys list [--json]         show keys, their state and when they may be pruned
  wxtoken keys prune                 delete retired keys no token can still need
  wxtoken config check [--dev]       print the effective configuration and its sources; non-zero if invalid
  wxtoken version                    print the version

Run 'wxtoken <command> --help' for a command's flags.

Environment:
  WXTOKEN_ADDR                 listen address (default :8080)
  WXTOKEN_ISSUER               the iss claim (default http://localhost:8080)
  WXTOKEN_KEYS_DIR             keys directory (default ./keys; ./.wxtoken-dev/keys with --dev)
  WXTOKEN_TOKEN_TTL            token lifetime (default 2h)
  WXTOKEN_LEEWAY               clock-skew leeway for exp/iat/nbf (default 30s)
  WECHAT_APPID                 the mini program's appid (required by serve, unless WXTOKEN_APPS_FILE)
  WECHAT_SECRET                its appsecret (required by serve, or WECHAT_SECRET_FILE)
  WECHAT_SECRET_FILE           a file holding the appsecret
  WXTOKEN_APPS_FILE            YAML or JSON file listing several mini programs (instead of WECHAT_APPID)
  WECHAT_API_BASE              WeChat's API base URL (default https://api.weixin.qq.com)
  WECHAT_TIMEOUT               total timeout of one WeChat call (default 5s)
  WXTOKEN_LOGIN_RATE           logins per second per client IP, per /64 for IPv6 (default 10; 0 = off)
  WXTOKEN_LOGIN_BURST          login burst per client (default 20)
  WXTOKEN_USER_RATE            phone-number and session-check calls per second per user (default 2; 0 = off)
  WXTOKEN_USER_BURST           their burst per user (default 10)
  WXTOKEN_AUTH_FAIL_RATE       failed bearer authentications per second per client IP, per /64, and failed
                               decrypts per user (default 1; 0 = off)
  WXTOKEN_AUTH_FAIL_BURST      their burst per client (default 20)
  WXTOKEN_TRUSTED_PROXIES      IPs/CIDRs whose X-Forwarded-For is believed (default none)
  WXTOKEN_UPSTREAM_CONCURRENCY WeChat calls in flight at most, for logins and other calls each (default 64)
  WXTOKEN_TOKEN_CACHE_ENTRIES  verified tokens kept in memory, about 630 B each (default 10000; 0 = off)
  WXTOKEN_ROTATE_EVERY         automatic key rotation period (default off)
  WXTOKEN_RELOAD_INTERVAL      how often the keys directory and apps file are checked for changes (default 2s)
  WXTOKEN_JWKS_MAX_AGE         Cache-Control max-age of the JWKS (default 5m)
  WXTOKEN_READ_TIMEOUT         time a client may take to send a whole request (default 15s; headers: 5s at most)
  WXTOKEN_IDLE_TIMEOUT         how long an idle keep-alive connection stays open (default 2m)
  WXTOKEN_METRICS_ADDR         serve /metrics on this separate listen address instead of the main one (default none)
  WXTOKEN_PPROF                true: also serve Go's profiles under /debug/pprof/ on WXTOKEN_METRICS_ADDR (default false)
  WXTOKEN_MAX_CONNS            open connections at most; at the cap the longest-idle one is closed (default 10000)
  WXTOKEN_SHUTDOWN_GRACE       how long in-flight requests may finish on SIGTERM (default 15s)
  WXTOKEN_LOG_LEVEL            debug, info, warn or error (default info)
`

// errUsage marks a command-line mistake: the usage has been printed already.
var errUsage = errors.New("usage error")

// run is the whole program, minus os.Exit: tests call it in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) < 2 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch cmd := args[1]; cmd {
	case "serve":
		return runServe(ctx, args[2:], getenv, stdout, stderr)
	case "keys":
		return runKeys(ctx, args[2:], getenv, stdout, stderr)
	case "config":
		return runConfig(ctx, args[2:], getenv, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "wxtoken", version)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", cmd, usage)
		return errUsage
	}
}

// newFlagSet makes a flag set that prints its help to stdout on --help and
// its errors to stderr, and never exits the process.
func newFlagSet(name, help string, stdout, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), help)
		fs.PrintDefaults()
	}
	_ = stdout
	return fs
}

// parseFlags parses args; --help prints to stdout and reports done.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) (done bool, err error) {
	err = fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fs.Usage()
		return true, nil
	}
	if err != nil {
		return true, errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		return true, errUsage
	}
	return false, nil
}

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
	// One line per request: batched into few writes (see logbuf), with
	// warnings and errors written at once and everything on the way out.
	logOut := logbuf.New(stderr, 64<<10, logbuf.Delay)
	defer logOut.Close()
	logger := slog.New(logbuf.Urgent(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: cfg.LogLevel}), logOut, slog.LevelWarn))

	if cfg.Dev {
		fmt.Fprint(stderr, devBanner)
	} else if cfg.AppsFile == "" && (cfg.AppID == "" || cfg.Secret.Empty()) {
		return errors.New("WECHAT_APPID and WECHAT_SECRET (or WECHAT_SECRET_FILE), or WXTOKEN_APPS_FILE, must be set; for a first try without a WeChat account run: wxtoken serve --dev")
	}
	served, watchApps, err := servedApps(cfg, logger)
	if err != nil {
		return err
	}

	var metricsLn net.Listener
	if cfg.MetricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return fmt.Errorf("metrics listen: %w", err)
		}
		defer metricsLn.Close()
	}
	// The keys load before the API port opens: a first run's "no keys"
	// advice is never hidden behind a busy port, and no client waits in
	// the accept queue of a server that then fails to start.
	srv, err := server.New(cfg.server(), server.Deps{Logger: logger, Apps: served, WatchApps: watchApps,
		MetricsListener: metricsLn, Emulator: emulatorLn})
	if errors.Is(err, keys.ErrNoKeys) {
		return fmt.Errorf("no keys in %s: run 'wxtoken keys init' first (WXTOKEN_KEYS_DIR=%s)", cfg.KeysDir, cfg.KeysDir)
	}
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		stopCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
		defer cancel()
		_ = srv.Shutdown(stopCtx)
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down: draining in-flight requests", "grace", cfg.ShutdownGrace.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// servedApps builds the apps serve answers for: any appid in dev mode, the
// apps file when WXTOKEN_APPS_FILE is set (with a watcher that reloads it),
// or the one app of WECHAT_APPID.
func servedApps(cfg *config, logger *slog.Logger) (handlers.Apps, func(context.Context), error) {
	switch {
	case cfg.Dev:
		return apps.Dev(cfg.AppID, cfg.Secret), nil, nil
	case cfg.AppsFile != "":
		f, err := apps.Open(apps.Config{Path: cfg.AppsFile, MaxTokenTTL: cfg.TokenTTL,
			ReloadInterval: cfg.ReloadInterval, Logger: logger})
		if err != nil {
			return nil, nil, err
		}
		return f, f.Watch, nil
	default:
		return apps.Single(wechat.Credentials{AppID: cfg.AppID, Secret: cfg.Secret}), nil, nil
	}
}
