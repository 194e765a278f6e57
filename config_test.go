package main

import (
	"testing"
	"time"
)

// TestWriteTimeoutCoversTheSlowestRequest: the write timeout runs from the
// end of the headers, so it must outlast the slowest body plus the longest
// WeChat work, or a slow WeChat would end in a cut connection, not a 504.
func TestWriteTimeoutCoversTheSlowestRequest(t *testing.T) {
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
