package main

import (
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
