package wechat

import (
	"strings"
	"testing"
)

func TestRedactor(t *testing.T) {
	tests := []struct {
		name, secret, code, text string
		gone, kept               []string
	}{
		{name: "raw, query- and JSON-escaped secret", secret: "s3cr+t/\"x",
			text: `a s3cr+t/"x b s3cr%2Bt%2F%22x c s3cr+t/\"x`, gone: []string{"s3cr"}},
		{name: "a short secret is still hidden", secret: "abc", text: "xabcx", gone: []string{"abc"}},
		{name: "a short code is not", secret: "the-secret", code: "time", text: "timeout the-secret",
			gone: []string{"the-secret"}, kept: []string{"timeout"}},
		{name: "a code of WeChat's length is", secret: "the-secret", code: "0a1b2c3d4e5f0a1b2c3d4e5f0a1b2c3d",
			text: "js_code=0a1b2c3d4e5f0a1b2c3d4e5f0a1b2c3d", gone: []string{"0a1b2c3d"}, kept: []string{"js_code="}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := newRedactor(tc.secret, tc.code).String(tc.text)
			for _, g := range tc.gone {
				if strings.Contains(got, g) {
					t.Errorf("%q still holds %q", got, g)
				}
			}
			for _, k := range tc.kept {
				if !strings.Contains(got, k) {
					t.Errorf("%q lost %q", got, k)
				}
			}
		})
	}
}
