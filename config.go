package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wxtoken/wxtoken/internal/bounded"
	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/server"
	"github.com/wxtoken/wxtoken/token"
	"github.com/wxtoken/wxtoken/wechat"
)

// Defaults that README's configuration table documents.
const (
	defaultAddr           = ":8080"
	defaultIssuer         = "http://localhost:8080"
	defaultKeysDir        = "./keys"
	defaultDevKeysDir     = "./.wxtoken-dev/keys"
	defaultAPIBase        = "https://api.weixin.qq.com"
	defaultTokenTTL       = 2 * time.Hour
	defaultLeeway         = 30 * time.Second
	defaultWeChatTimeout  = 5 * time.Second
	defaultLoginRate      = 10
	defaultLoginBurst     = 20
	defaultUserRate       = 2
	defaultUserBurst      = 10
	defaultAuthFailRate   = 1
	defaultAuthFailBurst  = 20
	defaultReload         = 2 * time.Second
	defaultShutdownGrace  = 15 * time.Second
	defaultReadTimeout    = 15 * time.Second
	defaultIdleTimeout    = 2 * time.Minute
	defaultMaxConns       = 10000
	defaultJWKSMaxAge     = 5 * time.Minute
	defaultUpstreamLimit  = 64
	defaultSigningAlg     = "ES256"
	devAppID              = "wx0123456789abcdef"
	retentionSlack        = 5 * time.Minute
	maxSecretFileBytes    = 4 << 10
	minRotateToMaxAgeRate = 2
	maxTokenCacheEntries  = 1_000_000 // about 630 MB of verified tokens
)

// config is everything serve and keys need, read once from the environment
// (through the injected getenv) and the command line.
type config struct {
	Addr                string
	Issuer              string
	KeysDir             string
	TokenTTL            time.Duration
	Leeway              time.Duration
	AppID               string
	Secret              secret.String
	SecretFile          string
	AppsFile            string
	APIBase             string
	WeChatTimeout       time.Duration
	LoginRate           float64
	LoginBurst          int
	UserRate            float64
	UserBurst           int
	AuthFailRate        float64
	AuthFailBurst       int
	TrustedProxies      []*net.IPNet
	RotateEvery         time.Duration
	ReloadInterval      time.Duration
	ShutdownGrace       time.Duration
	ReadTimeout         time.Duration
	IdleTimeout         time.Duration
	MaxConns            int
	JWKSMaxAge          time.Duration
	UpstreamConcurrency int
	TokenCacheEntries   int
	MetricsAddr         string
	Pprof               bool // net/http/pprof beside /metrics on MetricsAddr
	LogLevel            slog.Level
	Dev                 bool

	keysDirSet bool
	problems   []string
	// sources says where each setting came from ("environment", "flag",
	// "dev"); a setting not in it has its default. Read by config check.
	sources map[string]string
	// names lists every variable loadConfig read, in order.
	names []string
	// devValues replaces shown values that --dev makes only at start.
	devValues map[string]string
	// raw keeps the environment's text of each set variable, so config
	// check can show an invalid one as written.
	raw map[string]string
}

// retention is how long a retired key must stay usable: every token it
// could have signed or sealed has expired by then, with room for clock skew
// and for replicas that picked up the rotation a few seconds late.
func (c *config) retention() time.Duration { return c.TokenTTL + c.Leeway + retentionSlack }

// readHeaderTimeout bounds the wait for a request's headers: a client that
// dribbles them (slowloris) is cut off long before ReadTimeout.
func (c *config) readHeaderTimeout() time.Duration { return min(5*time.Second, c.ReadTimeout) }

// writeTimeout runs from the end of a request's headers, so it covers the
// slowest body (ReadTimeout) plus the longest work (requestTimeout) and
// some slack: a slow WeChat ends in a 504 problem, never in a cut
// connection.
func (c *config) writeTimeout() time.Duration {
	return c.ReadTimeout + c.requestTimeout() + 5*time.Second
}

// requestTimeout bounds the WeChat work of one request, counted once its
// body is read: room for an access_token fetch with its retries and the
// call it serves, and no more.
func (c *config) requestTimeout() time.Duration { return wechat.MaxCallTime(c.WeChatTimeout) }

// server maps the validated configuration onto the server's.
func (c *config) server() server.Config {
	sc := server.Config{
		Issuer:              c.Issuer,
		AppID:               c.AppID,
		KeysDir:             c.KeysDir,
		Retention:           c.retention(),
		ReloadInterval:      c.ReloadInterval,
		RotateEvery:         c.RotateEvery,
		TokenTTL:            c.TokenTTL,
		Leeway:              c.Leeway,
		TokenCacheEntries:   c.TokenCacheEntries,
		WeChatAPIBase:       c.APIBase,
		WeChatTimeout:       c.WeChatTimeout,
		UpstreamConcurrency: c.UpstreamConcurrency,
		LoginRate:           c.LoginRate,
		LoginBurst:          c.LoginBurst,
		UserRate:            c.UserRate,
		UserBurst:           c.UserBurst,
		AuthFailRate:        c.AuthFailRate,
		AuthFailBurst:       c.AuthFailBurst,
		TrustedProxies:      c.TrustedProxies,
		JWKSMaxAge:          c.JWKSMaxAge,
		RequestTimeout:      c.requestTimeout(),
		ReadHeaderTimeout:   c.readHeaderTimeout(),
		ReadTimeout:         c.ReadTimeout,
		WriteTimeout:        c.writeTimeout(),
		IdleTimeout:         c.IdleTimeout,
		MaxConns:            c.MaxConns,
		Pprof:               c.Pprof,
		OpenAPI:             openAPISpec,
		Dev:                 c.Dev,
		DevKeyAlg:           defaultSigningAlg,
	}
	if c.Dev {
		// Only the emulator is told the secret; outside dev mode it
		// reaches the WeChat client through the apps.
		sc.DevSecret = c.Secret
	}
	return sc
}

// loadConfig reads the environment. Every problem is collected, so the
// operator sees all of them at once instead of one per restart.
func loadConfig(getenv func(string) string) *config {
	c := &config{sources: map[string]string{}, raw: map[string]string{}}
	getenv = c.recordSources(getenv)
	c.Addr = envString(getenv, "WXTOKEN_ADDR", defaultAddr)
	c.Issuer = envString(getenv, "WXTOKEN_ISSUER", defaultIssuer)
	c.KeysDir = getenv("WXTOKEN_KEYS_DIR")
	c.keysDirSet = c.KeysDir != ""
	if !c.keysDirSet {
		c.KeysDir = defaultKeysDir
	}
	c.TokenTTL = c.duration(getenv, "WXTOKEN_TOKEN_TTL", defaultTokenTTL)
	c.Leeway = c.duration(getenv, "WXTOKEN_LEEWAY", defaultLeeway)
	c.AppID = getenv("WECHAT_APPID")
	c.Secret = secret.String(getenv("WECHAT_SECRET"))
	c.SecretFile = getenv("WECHAT_SECRET_FILE")
	c.AppsFile = getenv("WXTOKEN_APPS_FILE")
	c.APIBase = envString(getenv, "WECHAT_API_BASE", defaultAPIBase)
	c.WeChatTimeout = c.duration(getenv, "WECHAT_TIMEOUT", defaultWeChatTimeout)
	c.LoginRate = c.float(getenv, "WXTOKEN_LOGIN_RATE", defaultLoginRate)
	c.LoginBurst = c.integer(getenv, "WXTOKEN_LOGIN_BURST", defaultLoginBurst)
	c.UserRate = c.float(getenv, "WXTOKEN_USER_RATE", defaultUserRate)
	c.UserBurst = c.integer(getenv, "WXTOKEN_USER_BURST", defaultUserBurst)
	c.AuthFailRate = c.float(getenv, "WXTOKEN_AUTH_FAIL_RATE", defaultAuthFailRate)
	c.AuthFailBurst = c.integer(getenv, "WXTOKEN_AUTH_FAIL_BURST", defaultAuthFailBurst)
	c.TrustedProxies = c.cidrs(getenv, "WXTOKEN_TRUSTED_PROXIES")
	c.RotateEvery = c.duration(getenv, "WXTOKEN_ROTATE_EVERY", 0)
	c.ReloadInterval = c.duration(getenv, "WXTOKEN_RELOAD_INTERVAL", defaultReload)
	c.ShutdownGrace = c.duration(getenv, "WXTOKEN_SHUTDOWN_GRACE", defaultShutdownGrace)
	c.ReadTimeout = c.duration(getenv, "WXTOKEN_READ_TIMEOUT", defaultReadTimeout)
	c.IdleTimeout = c.duration(getenv, "WXTOKEN_IDLE_TIMEOUT", defaultIdleTimeout)
	c.MaxConns = c.integer(getenv, "WXTOKEN_MAX_CONNS", defaultMaxConns)
	c.JWKSMaxAge = c.duration(getenv, "WXTOKEN_JWKS_MAX_AGE", defaultJWKSMaxAge)
	c.UpstreamConcurrency = c.integer(getenv, "WXTOKEN_UPSTREAM_CONCURRENCY", defaultUpstreamLimit)
	c.TokenCacheEntries = c.integer(getenv, "WXTOKEN_TOKEN_CACHE_ENTRIES", token.DefaultCacheEntries)
	c.MetricsAddr = getenv("WXTOKEN_METRICS_ADDR")
	c.Pprof = c.boolean(getenv, "WXTOKEN_PPROF", false)
	if lv := getenv("WXTOKEN_LOG_LEVEL"); lv != "" {
		if err := c.LogLevel.UnmarshalText([]byte(lv)); err != nil {
			c.problems = append(c.problems, "WXTOKEN_LOG_LEVEL must be debug, info, warn or error")
		}
	}
	return c
}

// recordSources wraps getenv so every variable read is listed, and marked
// as coming from the environment when it is set.
func (c *config) recordSources(getenv func(string) string) func(string) string {
	return func(name string) string {
		v := getenv(name)
		if !slices.Contains(c.names, name) {
			c.names = append(c.names, name)
		}
		if v != "" {
			c.sources[name] = "environment"
			c.raw[name] = v
		}
		return v
	}
}

// markFlags records the settings the command line overrode.
func (c *config) markFlags(fs *flag.FlagSet) {
	vars := map[string]string{"addr": "WXTOKEN_ADDR", "issuer": "WXTOKEN_ISSUER", "keys-dir": "WXTOKEN_KEYS_DIR"}
	fs.Visit(func(f *flag.Flag) {
		if name, ok := vars[f.Name]; ok {
			c.sources[name] = "flag"
		}
	})
}

// serveFlags lets the command line override the environment.
func (c *config) serveFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.Dev, "dev", false, "dev mode: built-in WeChat emulator, keys made on first use; never in production")
	fs.StringVar(&c.Addr, "addr", c.Addr, "listen address (WXTOKEN_ADDR)")
	fs.StringVar(&c.Issuer, "issuer", c.Issuer, "the iss claim (WXTOKEN_ISSUER)")
	fs.Func("keys-dir", "keys directory (WXTOKEN_KEYS_DIR, default "+defaultKeysDir+"; "+defaultDevKeysDir+" with --dev)", func(s string) error {
		c.KeysDir, c.keysDirSet = s, true
		return nil
	})
}

// applyDev makes the --dev overrides: the dev keys directory unless one was
// given, the dev appid unless one was given, the built-in emulator as
// WeChat and a random appsecret it is told (any secret file is ignored).
func (c *config) applyDev(emulatorBase string, sec secret.String) {
	if !c.keysDirSet {
		c.KeysDir = defaultDevKeysDir
		c.sources["WXTOKEN_KEYS_DIR"] = "dev"
	}
	if c.AppID == "" {
		c.AppID = devAppID
		c.sources["WECHAT_APPID"] = "dev"
	}
	c.Secret, c.SecretFile, c.APIBase = sec, "", emulatorBase
	// Dev mode serves any appid, so an apps file has nothing to add.
	c.AppsFile = ""
	for _, name := range []string{"WECHAT_SECRET", "WECHAT_SECRET_FILE", "WECHAT_API_BASE", "WXTOKEN_APPS_FILE"} {
		c.sources[name] = "dev"
	}
}

// resolveSecret reads WECHAT_SECRET_FILE when it is set (a mounted secret is
// safer than an environment variable, which child processes inherit).
func (c *config) resolveSecret() error {
	if c.SecretFile == "" {
		return nil
	}
	if !c.Secret.Empty() {
		return errors.New("set WECHAT_SECRET or WECHAT_SECRET_FILE, not both")
	}
	buf, err := bounded.ReadFile(c.SecretFile, maxSecretFileBytes)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("WECHAT_SECRET_FILE: %w", err)
	}
	if err != nil {
		return errors.New("WECHAT_SECRET_FILE: file is too large to be an appsecret, or not a regular file")
	}
	c.Secret = secret.String(strings.TrimSpace(string(buf)))
	if c.Secret.Empty() {
		return errors.New("WECHAT_SECRET_FILE: file is empty")
	}
	return nil
}

// validate reports every configuration problem in one error.
func (c *config) validate() error {
	if problems := c.check(); len(problems) > 0 {
		return fmt.Errorf("invalid configuration: %s", strings.Join(problems, "; "))
	}
	return nil
}

// keysSettings are the variables the keys commands read: they validate
// these and nothing else, so a typo in a serving setting never blocks an
// emergency rotation.
var keysSettings = []string{"WXTOKEN_KEYS_DIR", "WXTOKEN_TOKEN_TTL", "WXTOKEN_LEEWAY",
	"WXTOKEN_JWKS_MAX_AGE", "WXTOKEN_RELOAD_INTERVAL"}

// validateKeys reports the problems of the settings the keys commands use.
func (c *config) validateKeys() error {
	var problems []string
	for _, p := range c.check() {
		for _, name := range keysSettings {
			if mentions([]string{p}, name) {
				problems = append(problems, p)
				break
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("invalid configuration: %s", strings.Join(problems, "; "))
	}
	return nil
}

// check lists every configuration problem as {condition, message}.
func (c *config) check() []string {
	checks := []struct {
		bad bool
		msg string
	}{
		{c.Issuer == "", "WXTOKEN_ISSUER must not be empty"},
		{c.TokenTTL < time.Minute || c.TokenTTL > 24*time.Hour, "WXTOKEN_TOKEN_TTL must be between 1m and 24h"},
		{c.Leeway < 0 || c.Leeway > 5*time.Minute, "WXTOKEN_LEEWAY must be between 0 and 5m"},
		{c.WeChatTimeout <= 0 || c.WeChatTimeout > time.Minute, "WECHAT_TIMEOUT must be between 1ms and 1m"},
		{c.LoginRate < 0, "WXTOKEN_LOGIN_RATE must be 0 (off) or positive"},
		{c.LoginBurst < 1, "WXTOKEN_LOGIN_BURST must be at least 1"},
		{c.UserRate < 0, "WXTOKEN_USER_RATE must be 0 (off) or positive"},
		{c.UserBurst < 1, "WXTOKEN_USER_BURST must be at least 1"},
		{c.AuthFailRate < 0, "WXTOKEN_AUTH_FAIL_RATE must be 0 (off) or positive"},
		{c.AuthFailBurst < 1, "WXTOKEN_AUTH_FAIL_BURST must be at least 1"},
		{c.RotateEvery < 0, "WXTOKEN_ROTATE_EVERY must be 0 (off) or positive"},
		{c.RotateEvery > 0 && c.RotateEvery < minRotateToMaxAgeRate*c.JWKSMaxAge,
			"WXTOKEN_ROTATE_EVERY must be at least twice WXTOKEN_JWKS_MAX_AGE, so caches see a new key before it signs"},
		{c.ReloadInterval < 100*time.Millisecond, "WXTOKEN_RELOAD_INTERVAL must be at least 100ms"},
		{c.ShutdownGrace <= 0, "WXTOKEN_SHUTDOWN_GRACE must be positive"},
		{c.ReadTimeout < 100*time.Millisecond || c.ReadTimeout > 5*time.Minute, "WXTOKEN_READ_TIMEOUT must be between 100ms and 5m"},
		{c.IdleTimeout < 100*time.Millisecond || c.IdleTimeout > time.Hour, "WXTOKEN_IDLE_TIMEOUT must be between 100ms and 1h"},
		{c.MaxConns < 1, "WXTOKEN_MAX_CONNS must be at least 1"},
		{c.JWKSMaxAge < 0 || c.JWKSMaxAge > time.Hour, "WXTOKEN_JWKS_MAX_AGE must be between 0 and 1h"},
		{c.UpstreamConcurrency < 1, "WXTOKEN_UPSTREAM_CONCURRENCY must be at least 1"},
		{c.TokenCacheEntries < 0 || c.TokenCacheEntries > maxTokenCacheEntries, "WXTOKEN_TOKEN_CACHE_ENTRIES must be between 0 (off) and 1000000"},
		{c.MetricsAddr != "" && !validListenAddr(c.MetricsAddr), "WXTOKEN_METRICS_ADDR must be a listen address like 127.0.0.1:9090 or :9090"},
		{c.MetricsAddr != "" && c.MetricsAddr == c.Addr && !strings.HasSuffix(c.Addr, ":0"), "WXTOKEN_METRICS_ADDR must differ from WXTOKEN_ADDR (leave it empty to serve /metrics there)"},
		{c.Pprof && c.MetricsAddr == "", "WXTOKEN_PPROF needs WXTOKEN_METRICS_ADDR: profiles are served only on that private listener, never on the API's"},
		{c.AppsFile != "" && c.AppID != "", "WXTOKEN_APPS_FILE and WECHAT_APPID are both set: configure one app with WECHAT_APPID, or several in the apps file, not both"},
		{c.AppsFile != "" && (!c.Secret.Empty() || c.SecretFile != ""),
			"WXTOKEN_APPS_FILE and WECHAT_SECRET (or WECHAT_SECRET_FILE) are both set: with an apps file, each app's secret is in it"},
	}
	problems := append([]string(nil), c.problems...)
	for _, ch := range checks {
		if ch.bad {
			problems = append(problems, ch.msg)
		}
	}
	return problems
}

// validListenAddr reports whether addr is host:port with a numeric port.
func validListenAddr(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535
}

func envString(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// setting reads the variable name with parse: unset, it is def; set to
// what parse refuses, it is def and a problem saying it must be what.
func setting[T any](c *config, getenv func(string) string, name string, def T, parse func(string) (T, error), what string) T {
	v := getenv(name)
	if v == "" {
		return def
	}
	x, err := parse(v)
	if err != nil {
		c.problems = append(c.problems, fmt.Sprintf("%s must be %s", name, what))
		return def
	}
	return x
}

func (c *config) duration(getenv func(string) string, name string, def time.Duration) time.Duration {
	return setting(c, getenv, name, def, time.ParseDuration, "a duration like 2h or 30s")
}

func (c *config) float(getenv func(string) string, name string, def float64) float64 {
	return setting(c, getenv, name, def, func(v string) (float64, error) { return strconv.ParseFloat(v, 64) }, "a number")
}

func (c *config) integer(getenv func(string) string, name string, def int) int {
	return setting(c, getenv, name, def, strconv.Atoi, "a whole number")
}

func (c *config) boolean(getenv func(string) string, name string, def bool) bool {
	return setting(c, getenv, name, def, strconv.ParseBool, "true or false")
}

// cidrs parses a comma-separated list of IPs or CIDR ranges.
func (c *config) cidrs(getenv func(string) string, name string) []*net.IPNet {
	var out []*net.IPNet
	for _, s := range strings.Split(getenv(name), ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			if ip := net.ParseIP(s); ip != nil {
				bits := 32
				if ip.To4() == nil {
					bits = 128
				}
				out = append(out, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
				continue
			}
		}
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			c.problems = append(c.problems, fmt.Sprintf("%s: %q is not an IP or CIDR range", name, s))
			continue
		}
		out = append(out, n)
	}
	return out
}
