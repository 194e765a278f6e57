package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/wxtoken/wxtoken/apps"
	"github.com/wxtoken/wxtoken/secret"
)

const configUsage = `Usage: wxtoken config check [--dev] [serve flags]

Prints the configuration 'wxtoken serve' would run with, one line per setting: its name, its effective
value and where the value came from (default, environment, flag, dev). Secrets are masked. Exits non-zero
with one line per problem when a setting is invalid.

Flags:
`

// errConfigInvalid is returned by config check after it printed the problems.
var errConfigInvalid = errors.New("invalid configuration")

// settingValues shows each variable's effective value. Every variable
// loadConfig reads must be here (a test checks), so the check never hides one.
var settingValues = map[string]func(c *config) string{
	"WXTOKEN_ADDR":                 func(c *config) string { return c.Addr },
	"WXTOKEN_ISSUER":               func(c *config) string { return c.Issuer },
	"WXTOKEN_KEYS_DIR":             func(c *config) string { return c.KeysDir },
	"WXTOKEN_TOKEN_TTL":            func(c *config) string { return c.TokenTTL.String() },
	"WXTOKEN_LEEWAY":               func(c *config) string { return c.Leeway.String() },
	"WECHAT_APPID":                 func(c *config) string { return orNone(c.AppID) },
	"WECHAT_SECRET":                func(c *config) string { return masked(!c.Secret.Empty() && c.SecretFile == "") },
	"WECHAT_SECRET_FILE":           func(c *config) string { return orNone(c.SecretFile) },
	"WXTOKEN_APPS_FILE":            func(c *config) string { return orNone(c.AppsFile) },
	"WECHAT_API_BASE":              func(c *config) string { return c.APIBase },
	"WECHAT_TIMEOUT":               func(c *config) string { return c.WeChatTimeout.String() },
	"WXTOKEN_LOGIN_RATE":           func(c *config) string { return perSecond(c.LoginRate) },
	"WXTOKEN_LOGIN_BURST":          func(c *config) string { return strconv.Itoa(c.LoginBurst) },
	"WXTOKEN_USER_RATE":            func(c *config) string { return perSecond(c.UserRate) },
	"WXTOKEN_USER_BURST":           func(c *config) string { return strconv.Itoa(c.UserBurst) },
	"WXTOKEN_TRUSTED_PROXIES":      func(c *config) string { return cidrList(c.TrustedProxies) },
	"WXTOKEN_ROTATE_EVERY":         func(c *config) string { return offIfZero(c.RotateEvery.String(), c.RotateEvery == 0) },
	"WXTOKEN_RELOAD_INTERVAL":      func(c *config) string { return c.ReloadInterval.String() },
	"WXTOKEN_SHUTDOWN_GRACE":       func(c *config) string { return c.ShutdownGrace.String() },
	"WXTOKEN_READ_TIMEOUT":         func(c *config) string { return c.ReadTimeout.String() },
	"WXTOKEN_IDLE_TIMEOUT":         func(c *config) string { return c.IdleTimeout.String() },
	"WXTOKEN_JWKS_MAX_AGE":         func(c *config) string { return c.JWKSMaxAge.String() },
	"WXTOKEN_UPSTREAM_CONCURRENCY": func(c *config) string { return strconv.Itoa(c.UpstreamConcurrency) },
	"WXTOKEN_LOG_LEVEL":            func(c *config) string { return strings.ToLower(c.LogLevel.String()) },
	"WXTOKEN_AUTH_FAIL_RATE":       func(c *config) string { return perSecond(c.AuthFailRate) },
	"WXTOKEN_AUTH_FAIL_BURST":      func(c *config) string { return strconv.Itoa(c.AuthFailBurst) },
	"WXTOKEN_MAX_CONNS":            func(c *config) string { return strconv.Itoa(c.MaxConns) },
	"WXTOKEN_METRICS_ADDR":         func(c *config) string { return orNone(c.MetricsAddr) },
	"WXTOKEN_PPROF":                func(c *config) string { return strconv.FormatBool(c.Pprof) },
	"WXTOKEN_TOKEN_CACHE_ENTRIES": func(c *config) string {
		return offIfZero(strconv.Itoa(c.TokenCacheEntries), c.TokenCacheEntries == 0)
	},
}

// runConfig runs `wxtoken config check`.
func runConfig(_ context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, configUsage)
			return nil
		}
		fmt.Fprint(stderr, configUsage)
		return errUsage
	}
	cfg := loadConfig(getenv)
	fs := newFlagSet("config check", configUsage, stdout, stderr)
	cfg.serveFlags(fs)
	if done, err := parseFlags(fs, args[1:], stdout); done {
		return err
	}
	cfg.markFlags(fs)
	if cfg.Dev {
		cfg.showDev()
	}
	problems := cfg.check()
	var listed *apps.Set
	if cfg.AppsFile != "" {
		set, err := apps.Load(cfg.AppsFile, cfg.TokenTTL)
		if err != nil {
			problems = append(problems, err.Error())
		}
		listed = set
	} else if !cfg.Dev {
		if err := cfg.resolveSecret(); err != nil {
			problems = append(problems, err.Error())
		}
		if cfg.AppID == "" {
			problems = append(problems, "WECHAT_APPID must be set (or run with --dev)")
		}
		if cfg.Secret.Empty() && cfg.SecretFile == "" {
			problems = append(problems, "WECHAT_SECRET or WECHAT_SECRET_FILE must be set (or run with --dev)")
		}
	}

	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	for _, name := range cfg.names {
		show, ok := settingValues[name]
		value := "?"
		if ok {
			value = show(cfg)
		}
		if v, ok := cfg.devValues[name]; ok {
			value = v
		}
		if raw, set := cfg.raw[name]; set && name != "WECHAT_SECRET" && mentions(problems, name) {
			value = fmt.Sprintf("%q (invalid)", raw)
		}
		source := cfg.sources[name]
		if source == "" {
			source = "default"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", name, value, source)
	}
	if listed != nil {
		for _, id := range listed.AppIDs() {
			fmt.Fprintf(tw, "  app %s\t%s\t%s\n", id, listed.Describe(id), "WXTOKEN_APPS_FILE")
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, "problem:", p)
		}
		return errConfigInvalid
	}
	return nil
}

// showDev applies what --dev changes, so the check shows what serve --dev
// would run with; the emulator's address and the secret exist only at start.
func (c *config) showDev() {
	c.applyDev("(the built-in emulator on a loopback port)", secret.String("dev"))
	c.devValues = map[string]string{"WECHAT_SECRET": "(random, made at start)", "WECHAT_SECRET_FILE": "(ignored)",
		"WXTOKEN_APPS_FILE": "(ignored: dev mode serves any appid)"}
}

// mentions reports whether a problem is about the variable name (every
// problem message starts with the variable it concerns).
func mentions(problems []string, name string) bool {
	for _, p := range problems {
		if strings.HasPrefix(p, name+" ") || strings.HasPrefix(p, name+":") {
			return true
		}
	}
	return false
}

func masked(set bool) string {
	if set {
		return "******** (set, masked)"
	}
	return "(none)"
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func offIfZero(s string, off bool) string {
	if off {
		return "off"
	}
	return s
}

func perSecond(f float64) string {
	if f == 0 {
		return "off"
	}
	return strconv.FormatFloat(f, 'f', -1, 64) + "/s"
}

func cidrList(nets []*net.IPNet) string {
	if len(nets) == 0 {
		return "(none)"
	}
	s := make([]string, len(nets))
	for i, n := range nets {
		s[i] = n.String()
	}
	return strings.Join(s, ",")
}
