package main

import (
	"strings"
	"testing"
	"time"
)

// TestWriteTimeoutCoversTheSlowestRequest: the write timeout runs from the
// end of the headers, so it must outlast the slowest body plus the longest
// WeChat work, or a slow WeChat would end in a cut connection, not a 504.
func TestWriteTimeoutCoversTheSlowestRequest(t *testing.T) {
	t.Parallel()
	for _, e := range []env{
		{},
		{"WXTOKEN_READ_TIMEOUT": "5m", "WECHAT_TIMEOUT": "100ms"},
		{"WXTOKEN_READ_TIMEOUT": "100ms", "WECHAT_TIMEOUT": "30s"},
	} {
		cfg := loadConfig(e.getenv)
		if err := cfg.validate(); err != nil {
			t.Fatalf("%v: %v", e, err)
		}
		if slowest := cfg.ReadTimeout + cfg.requestTimeout(); cfg.writeTimeout() <= slowest {
			t.Errorf("%v: write timeout %v does not outlast body %v + work %v", e, cfg.writeTimeout(), cfg.ReadTimeout, cfg.requestTimeout())
		}
		if cfg.readHeaderTimeout() > 5*time.Second || cfg.readHeaderTimeout() > cfg.ReadTimeout {
			t.Errorf("%v: header timeout %v", e, cfg.readHeaderTimeout())
		}
	}
}

// TestUnparsableSettingsKeepTheirDefault: a duration, number or whole number
// that does not parse is named in a problem, and the setting keeps its
// default; an unset one is its default with no problem.
func TestUnparsableSettingsKeepTheirDefault(t *testing.T) {
	tests := []struct {
		name, value, problem string
		got                  func(*config) any
		def                  any
	}{
		{"WXTOKEN_TOKEN_TTL", "two hours", "WXTOKEN_TOKEN_TTL must be a duration like 2h or 30s",
			func(c *config) any { return c.TokenTTL }, time.Duration(defaultTokenTTL)},
		{"WXTOKEN_LOGIN_RATE", "ten", "WXTOKEN_LOGIN_RATE must be a number",
			func(c *config) any { return c.LoginRate }, float64(defaultLoginRate)},
		{"WXTOKEN_LOGIN_BURST", "2.5", "WXTOKEN_LOGIN_BURST must be a whole number",
			func(c *config) any { return c.LoginBurst }, int(defaultLoginBurst)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, e := range []env{{tc.name: tc.value}, {}} {
				cfg := loadConfig(e.getenv)
				problems := strings.Join(cfg.check(), "\n")
				if set := len(e) > 0; set != strings.Contains(problems, tc.problem) {
					t.Errorf("%v: problems %q, want %q named: %v", e, problems, tc.problem, set)
				}
				if got := tc.got(cfg); got != tc.def {
					t.Errorf("%v: %s = %v, want its default %v", e, tc.name, got, tc.def)
				}
			}
		})
	}
}

// TestServerConfigTimeouts: the server gets a header timeout of 5 s, or
// WXTOKEN_READ_TIMEOUT when that is shorter, and the read and idle
// timeouts as set.
func TestServerConfigTimeouts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env                    env
		readHeader, read, idle time.Duration
	}{
		{env{}, 5 * time.Second, 15 * time.Second, 2 * time.Minute},
		{env{"WXTOKEN_READ_TIMEOUT": "1s", "WXTOKEN_IDLE_TIMEOUT": "1s"}, time.Second, time.Second, time.Second},
		{env{"WXTOKEN_READ_TIMEOUT": "5m"}, 5 * time.Second, 5 * time.Minute, 2 * time.Minute},
	} {
		cfg := loadConfig(tc.env.getenv)
		if err := cfg.validate(); err != nil {
			t.Fatalf("%v: %v", tc.env, err)
		}
		sc := cfg.server()
		if sc.ReadHeaderTimeout != tc.readHeader || sc.ReadTimeout != tc.read || sc.IdleTimeout != tc.idle {
			t.Errorf("%v: header %v, read %v, idle %v; want %v, %v, %v", tc.env,
				sc.ReadHeaderTimeout, sc.ReadTimeout, sc.IdleTimeout, tc.readHeader, tc.read, tc.idle)
		}
	}
}
