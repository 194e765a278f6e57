package wechat_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/emulator"
	"github.com/wxtoken/wxtoken/internal/syncbuf"
	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/wechat"
)

// TestResetSessionKey: the reset answers a new key that WeChat now holds;
// the old key fails checksession and cannot reset again.
func TestResetSessionKey(t *testing.T) {
	w := newWorld(t, nil)
	ctx := context.Background()
	s, err := w.client.Code2Session(ctx, app, "reset-1")
	if err != nil {
		t.Fatal(err)
	}
	sk, err := w.client.ResetSessionKey(ctx, app, s.OpenID, s.SessionKey)
	if err != nil {
		t.Fatal(err)
	}
	if sk == s.SessionKey || !wechat.ValidSessionKey(sk) || w.emu.CurrentSessionKey(appID, s.OpenID) != sk.Reveal() {
		t.Fatal("the new session_key is not WeChat's new current one")
	}
	if ok, err := w.client.CheckSession(ctx, app, s.OpenID, s.SessionKey); ok || err != nil {
		t.Errorf("old key after a reset: %v %v, want false", ok, err)
	}
	if ok, err := w.client.CheckSession(ctx, app, s.OpenID, sk); !ok || err != nil {
		t.Errorf("new key: %v %v, want true", ok, err)
	}
	if _, err := w.client.ResetSessionKey(ctx, app, s.OpenID, s.SessionKey); !errors.Is(err, wechat.ErrStaleSessionKey) {
		t.Errorf("reset with the old key: %v, want ErrStaleSessionKey", err)
	}
	if strings.Contains(w.logs.String(), sk.Reveal()) {
		t.Error("the new session_key reached the logs")
	}
	w.emu.SetFault("/wxa/resetusersessionkey", emulator.Fault{Garbage: true, Times: 1})
	var ue *wechat.UpstreamError
	if _, err := w.client.ResetSessionKey(ctx, app, s.OpenID, sk); !errors.As(err, &ue) || ue.Op != wechat.OpResetSessionKey {
		t.Errorf("garbage answer: %v", err)
	}
}

// TestUserRiskRank: the rank WeChat gives; an answer out of 0..4 is a bad
// answer, an errcode an APIError.
func TestUserRiskRank(t *testing.T) {
	w := newWorld(t, nil)
	ctx := context.Background()
	openid := emulator.OpenID(appID, "risky")
	w.emu.SetRiskRank(appID, openid, 3)
	if r, err := w.client.UserRiskRank(ctx, app, openid, "203.0.113.7"); r != 3 || err != nil {
		t.Fatalf("rank %d %v, want 3", r, err)
	}
	w.emu.SetRiskRank(appID, openid, 7)
	var ue *wechat.UpstreamError
	if _, err := w.client.UserRiskRank(ctx, app, openid, "203.0.113.7"); !errors.As(err, &ue) || ue.Kind != wechat.BadAnswer {
		t.Errorf("rank 7: %v, want a bad answer", err)
	}
	w.emu.SetFault("/wxa/getuserriskrank", emulator.Fault{Errcode: -1, Times: 1})
	var ae *wechat.APIError
	if _, err := w.client.UserRiskRank(ctx, app, openid, "203.0.113.7"); !errors.As(err, &ae) || ae.Op != wechat.OpRiskRank {
		t.Errorf("errcode -1: %v", err)
	}
	// Without a client IP WeChat refuses the call (47001).
	if _, err := w.client.UserRiskRank(ctx, app, openid, ""); !errors.As(err, &ae) || ae.Code != 47001 {
		t.Errorf("no client IP: %v, want errcode 47001", err)
	}
}

// TestBreakerPerApp: failures of one app open that app's circuit only.
func TestBreakerPerApp(t *testing.T) {
	t.Parallel()
	const other, otherSecret = "wx9999888877776666", "other-appsecret-0123456789"
	emu := emulator.New(emulator.Config{Apps: map[string]string{appID: appSecret, other: otherSecret}})
	ts := httptest.NewServer(emu)
	t.Cleanup(ts.Close)
	logs := &syncbuf.Buffer{}
	c, err := wechat.NewClient(wechat.Config{BaseURL: ts.URL, Timeout: time.Second, BreakerCooldown: time.Minute,
		Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	otherApp := wechat.Credentials{AppID: other, Secret: otherSecret}
	emu.SetFault("/cgi-bin/stable_token", emulator.Fault{HTTPStatus: 503, AppID: other})
	var ue *wechat.UpstreamError
	for i := 0; i < 10 && !(errors.As(err, &ue) && ue.Kind == wechat.CircuitOpen); i++ {
		_, err = c.CheckSession(ctx, otherApp, "o", "tiihtNczf5v6AKRyjwEUhQ==")
	}
	if ue == nil || ue.Kind != wechat.CircuitOpen {
		t.Fatalf("the other app's circuit did not open: %v", err)
	}
	s, err := c.Code2Session(ctx, app, "breaker-1")
	if err != nil {
		t.Fatalf("this app while the other's circuit is open: %v", err)
	}
	if ok, err := c.CheckSession(ctx, app, s.OpenID, s.SessionKey); !ok || err != nil {
		t.Errorf("this app's access_token calls: %v %v", ok, err)
	}
	if !strings.Contains(logs.String(), `"appid":"`+other+`"`) {
		t.Errorf("the breaker's log does not name the app:\n%s", logs.String())
	}
}

// TestResetNeverResentOnReusedConnection: WeChat acts on a reset read from a
// reused connection (the key is replaced), then closes the connection
// without answering. net/http re-sends a replayable GET in exactly that
// case, and the re-sent reset, signed with the replaced key, would be
// refused (87009) with the new key lost. The reset must instead reach
// WeChat once and fail as an upstream error, not as a stale session.
func TestResetNeverResentOnReusedConnection(t *testing.T) {
	const path = "/wxa/resetusersessionkey"
	w := newWorld(t, func(c *wechat.Config) { c.Timeout = 5 * time.Second })
	ctx := context.Background()
	s, err := w.client.Code2Session(ctx, app, "reset-reused")
	if err != nil {
		t.Fatal(err)
	}
	sk := s.SessionKey
	for range 20 {
		// A successful reset leaves its connection idle for the next one.
		if sk, err = w.client.ResetSessionKey(ctx, app, s.OpenID, sk); err != nil {
			t.Fatal(err)
		}
		w.emu.SetFault(path, emulator.Fault{CloseAfterRead: true, Times: 1})
		before := w.emu.Calls(path)
		var a attempts
		_, err = w.client.ResetSessionKey(a.ctx(), app, s.OpenID, sk)
		w.emu.SetFault(path, emulator.Fault{})
		tries := a.get()
		if len(tries) == 0 || !tries[0] {
			// The connection was not pooled (net/http may drop one on a
			// loaded machine), and net/http never re-sends on a fresh one:
			// take up the key WeChat now holds and try again.
			if cur := w.emu.CurrentSessionKey(appID, s.OpenID); cur != sk.Reveal() {
				sk = secret.String(cur)
			}
			continue
		}
		if n := w.emu.Calls(path) - before; n != 1 || len(tries) != 1 {
			t.Errorf("the reset reached WeChat %d times in %d tries (reused: %v), want once", n, len(tries), tries)
		}
		if errors.Is(err, wechat.ErrStaleSessionKey) {
			t.Fatalf("err = %v: the reset was re-sent and refused as stale", err)
		}
		var ue *wechat.UpstreamError
		if !errors.As(err, &ue) || ue.Kind != wechat.Unreachable || ue.Op != wechat.OpResetSessionKey {
			t.Fatalf("err = %v, want an Unreachable upstream error of %s", err, wechat.OpResetSessionKey)
		}
		// WeChat did replace the key; the answer was lost, and only a new
		// wx.login() recovers, which the pool still serves.
		if w.emu.CurrentSessionKey(appID, s.OpenID) == sk.Reveal() {
			t.Error("WeChat did not act on the reset")
		}
		if _, err := w.client.Code2Session(ctx, app, "after-reset"); err != nil {
			t.Errorf("login after the dropped reset: %v", err)
		}
		// The unreplayable body never reaches the wire.
		if n := w.bodied.Load(); n != 0 {
			t.Errorf("%d GETs carried a body or Transfer-Encoding", n)
		}
		return
	}
	t.Fatal("no reset went out on a reused connection in 20 tries")
}
