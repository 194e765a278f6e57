package handlers_test

import (
	"strings"
	"testing"
)

// TestLoginRefusesAMalformedWeChatAnswer: an openid WeChat never gives (here
// 5,000 characters) is a 502 wechat-error problem, not a token the service
// would refuse on every use.
func TestLoginRefusesAMalformedWeChatAnswer(t *testing.T) {
	f := newFixture(t, options{})
	f.wx.PresetLogin("huge-openid", strings.Repeat("o", 5000), "", "BBBBBBBBBBBBBBBBBBBBBB==")
	a := f.post(t, "/v1/login", "", `{"code":"huge-openid"}`)
	p := wantProblem(t, a, 502, "wechat-error")
	if _, ok := p["token"]; ok || strings.Contains(string(a.body), "ooooo") {
		t.Errorf("answer carries the malformed identity: %s", a.body)
	}
}
