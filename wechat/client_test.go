package wechat_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/emulator"
	"github.com/wxtoken/wxtoken/internal/syncbuf"
	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/wechat"
)

const (
	appID     = "wx1111222233334444"
	appSecret = "test-appsecret-0123456789"
)

var app = wechat.Credentials{AppID: appID, Secret: appSecret}

// world is an emulator on loopback and a client pointed at it, with the
// client's logs captured.
type world struct {
	emu    *emulator.Emulator
	client *wechat.Client
	logs   *syncbuf.Buffer
	url    string
	// bodied counts GETs that arrived with a body or Transfer-Encoding.
	bodied *atomic.Int32
}

func newWorld(t *testing.T, tweak func(*wechat.Config)) *world {
	t.Helper()
	emu := emulator.New(emulator.Config{Apps: map[string]string{appID: appSecret}, UnionID: true})
	bodied := &atomic.Int32{}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && (r.ContentLength != 0 || len(r.TransferEncoding) > 0) {
			bodied.Add(1)
		}
		emu.ServeHTTP(rw, r)
	}))
	ts.Start()
	t.Cleanup(ts.Close)
	logs := &syncbuf.Buffer{}
	cfg := wechat.Config{
		BaseURL: ts.URL,
		Timeout: 300 * time.Millisecond,
		Logger:  slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	c, err := wechat.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if strings.Contains(logs.String(), appSecret) {
			t.Error("the appsecret reached the logs")
		}
	})
	return &world{emu: emu, client: c, logs: logs, url: ts.URL, bodied: bodied}
}

func TestCode2Session(t *testing.T) {
	w := newWorld(t, nil)
	s, err := w.client.Code2Session(context.Background(), app, "code-1")
	if err != nil {
		t.Fatal(err)
	}
	if s.OpenID == "" || s.UnionID == "" || !wechat.ValidSessionKey(s.SessionKey) {
		t.Errorf("session = %+v", s)
	}
	if got := w.emu.CurrentSessionKey(appID, s.OpenID); got != s.SessionKey.Reveal() {
		t.Error("session_key differs from the emulator's")
	}
}

func TestCode2SessionErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		code   string
		app    wechat.Credentials
		fault  *emulator.Fault
		errno  int
		kind   wechat.UpstreamKind
		status int
	}{
		{name: "invalid code", code: "err-40029", app: app, errno: 40029},
		{name: "code used", code: "err-40163", app: app, errno: 40163},
		{name: "high risk", code: "err-40226", app: app, errno: 40226},
		{name: "rate limited", code: "err-45011", app: app, errno: 45011},
		{name: "busy", code: "err--1", app: app, errno: -1},
		{name: "wrong secret", code: "c", app: wechat.Credentials{AppID: appID, Secret: "wrong"}, errno: 40125},
		{name: "unknown appid", code: "c", app: wechat.Credentials{AppID: "wxnotknown", Secret: appSecret}, errno: 40013},
		{name: "http 502", code: "c", app: app, fault: &emulator.Fault{HTTPStatus: 502}, kind: wechat.BadStatus, status: 502},
		{name: "garbage", code: "c", app: app, fault: &emulator.Fault{Garbage: true}, kind: wechat.BadAnswer},
		{name: "hang", code: "c", app: app, fault: &emulator.Fault{Hang: 2 * time.Second}, kind: wechat.Timeout},
		{name: "reset", code: "c", app: app, fault: &emulator.Fault{Reset: true}, kind: wechat.Unreachable},
		{name: "errcode fault", code: "c", app: app, fault: &emulator.Fault{Errcode: 40029}, errno: 40029},
		{name: "huge header", code: "c", app: app, fault: &emulator.Fault{HeaderBytes: 1 << 20}, kind: wechat.Unreachable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, nil)
			if tc.fault != nil {
				w.emu.SetFault("/sns/jscode2session", *tc.fault)
			}
			_, err := w.client.Code2Session(context.Background(), tc.app, tc.code)
			if err == nil {
				t.Fatal("no error")
			}
			if strings.Contains(err.Error(), appSecret) || strings.Contains(err.Error(), "secret=") {
				t.Errorf("error leaks the request: %v", err)
			}
			if tc.errno != 0 {
				var ae *wechat.APIError
				if !errors.As(err, &ae) || ae.Code != tc.errno || ae.Op != wechat.OpCode2Session {
					t.Fatalf("err = %v, want APIError %d", err, tc.errno)
				}
				return
			}
			var ue *wechat.UpstreamError
			if !errors.As(err, &ue) || ue.Kind != tc.kind || ue.Status != tc.status {
				t.Fatalf("err = %v, want UpstreamError %v", err, tc.kind)
			}
			// A js_code is single-use: it is never sent twice.
			if n := w.emu.Calls("/sns/jscode2session"); n != 1 {
				t.Errorf("jscode2session called %d times, want 1", n)
			}
		})
	}
}

// TestHeaderCapLeavesRoomForRealAnswers: the response header cap refuses
// megabytes, not the kilobyte a proxy in front of WeChat might add.
func TestHeaderCapLeavesRoomForRealAnswers(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.emu.SetFault("/sns/jscode2session", emulator.Fault{HeaderBytes: 2 << 10})
	if _, err := w.client.Code2Session(context.Background(), app, "padded"); err != nil {
		t.Fatalf("a 2 KiB header: %v", err)
	}
	w.emu.SetFault("/cgi-bin/stable_token", emulator.Fault{HeaderBytes: 1 << 20})
	s, err := w.client.Code2Session(context.Background(), app, "holder")
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.client.CheckSession(context.Background(), app, s.OpenID, s.SessionKey)
	var ue *wechat.UpstreamError
	if !errors.As(err, &ue) || ue.Op != wechat.OpStableToken {
		t.Fatalf("a 1 MiB header on stable_token: %v, want an UpstreamError", err)
	}
}

func TestCircuitBreakerFailsFastAndRecovers(t *testing.T) {
	t.Parallel()
	w := newWorld(t, func(c *wechat.Config) {
		c.BreakerThreshold = 3
		c.BreakerCooldown = 300 * time.Millisecond
	})
	w.emu.SetFault("/sns/jscode2session", emulator.Fault{HTTPStatus: 500})
	for i := 0; i < 3; i++ {
		_, _ = w.client.Code2Session(context.Background(), app, "c")
	}
	start := time.Now()
	_, err := w.client.Code2Session(context.Background(), app, "c")
	var ue *wechat.UpstreamError
	if !errors.As(err, &ue) || ue.Kind != wechat.CircuitOpen || ue.RetryAfter <= 0 {
		t.Fatalf("err = %v, want CircuitOpen with RetryAfter", err)
	}
	if time.Since(start) > 50*time.Millisecond {
		t.Errorf("open circuit took %v", time.Since(start))
	}
	if n := w.emu.Calls("/sns/jscode2session"); n != 3 {
		t.Errorf("WeChat saw %d calls, want 3 (the open circuit must not call)", n)
	}
	// WeChat's answers (errcodes) are not failures: after the cooldown one
	// trial call closes the circuit again.
	w.emu.SetFault("/sns/jscode2session", emulator.Fault{})
	time.Sleep(350 * time.Millisecond)
	if _, err := w.client.Code2Session(context.Background(), app, "after"); err != nil {
		t.Fatalf("after cooldown: %v", err)
	}
	for i := 0; i < 5; i++ {
		if _, err := w.client.Code2Session(context.Background(), app, "err-40029"); errors.As(err, &ue) {
			t.Fatalf("errcodes opened the circuit: %v", err)
		}
	}
}

// TestExpiredCallersDoNotTripTheBreaker: calls whose context had already
// expired never reach WeChat and are not counted against it.
func TestExpiredCallersDoNotTripTheBreaker(t *testing.T) {
	w := newWorld(t, nil)
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	for i := range 10 {
		_, err := w.client.Code2Session(expired, app, "late-"+strconv.Itoa(i))
		var ue *wechat.UpstreamError
		if !errors.As(err, &ue) || ue.Kind != wechat.Timeout {
			t.Fatalf("expired call %d: %v, want Timeout", i, err)
		}
	}
	if n := w.emu.Calls("/sns/jscode2session"); n != 0 {
		t.Fatalf("expired calls reached WeChat %d times", n)
	}
	if _, err := w.client.Code2Session(context.Background(), app, "on-time"); err != nil {
		t.Fatalf("a call on time after expired ones: %v (the breaker counted them)", err)
	}
}

func TestOverloadFailsFast(t *testing.T) {
	t.Parallel()
	w := newWorld(t, func(c *wechat.Config) { c.MaxConcurrent = 1; c.Timeout = time.Second })
	w.emu.SetFault("/sns/jscode2session", emulator.Fault{Hang: 500 * time.Millisecond, PassThrough: true, Times: 1})
	done := make(chan error)
	go func() {
		_, err := w.client.Code2Session(context.Background(), app, "slow")
		done <- err
	}()
	// Wait until the slow call holds the only slot.
	for w.emu.Calls("/sns/jscode2session") == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	_, err := w.client.Code2Session(context.Background(), app, "second")
	var ue *wechat.UpstreamError
	if !errors.As(err, &ue) || ue.Kind != wechat.Overloaded {
		t.Errorf("err = %v, want Overloaded", err)
	}
	if err := <-done; err != nil {
		t.Errorf("slow call: %v", err)
	}
}

// TestLoginsHaveTheirOwnSlots: token holders' calls that fill every slot
// (here, session checks stuck on a slow WeChat) do not starve new logins.
func TestLoginsHaveTheirOwnSlots(t *testing.T) {
	t.Parallel()
	w := newWorld(t, func(c *wechat.Config) { c.MaxConcurrent = 2; c.Timeout = 2 * time.Second })
	ctx := context.Background()
	s, err := w.client.Code2Session(ctx, app, "holder")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.client.CheckSession(ctx, app, s.OpenID, s.SessionKey); err != nil { // caches the access_token
		t.Fatal(err)
	}
	w.emu.SetFault("/wxa/checksession", emulator.Fault{Hang: 600 * time.Millisecond, PassThrough: true})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if _, err := w.client.CheckSession(ctx, app, s.OpenID, s.SessionKey); err != nil {
				t.Errorf("slow session check: %v", err)
			}
		})
	}
	for w.emu.Calls("/wxa/checksession") < 3 {
		time.Sleep(5 * time.Millisecond)
	}
	// Every non-login slot is taken: a third session check is refused ...
	_, err = w.client.CheckSession(ctx, app, s.OpenID, s.SessionKey)
	var ue *wechat.UpstreamError
	if !errors.As(err, &ue) || ue.Kind != wechat.Overloaded {
		t.Errorf("third session check: %v, want Overloaded", err)
	}
	// ... but a login goes through.
	if _, err := w.client.Code2Session(ctx, app, "newcomer"); err != nil {
		t.Errorf("login while session checks hold every slot: %v", err)
	}
	wg.Wait()
}

func TestPhoneNumberAndAccessTokenCache(t *testing.T) {
	w := newWorld(t, nil)
	ctx := context.Background()
	s, err := w.client.Code2Session(ctx, app, "code-phone")
	if err != nil {
		t.Fatal(err)
	}
	for i, code := range []string{"p1", "p2", "p3"} {
		info, err := w.client.PhoneNumber(ctx, app, code, s.OpenID)
		if err != nil {
			t.Fatalf("phone %d: %v", i, err)
		}
		if len(info.PurePhoneNumber) != 11 || info.CountryCode != "86" || info.Watermark.AppID != appID {
			t.Errorf("phone = %+v", info)
		}
	}
	if n := w.emu.Calls("/cgi-bin/stable_token"); n != 1 {
		t.Errorf("stable_token called %d times for 3 calls, want 1 (cached)", n)
	}
	_, err = w.client.PhoneNumber(ctx, app, "err-40029", s.OpenID)
	var ae *wechat.APIError
	if !errors.As(err, &ae) || ae.Code != 40029 || ae.Op != wechat.OpPhoneNumber {
		t.Errorf("bad phone code: %v", err)
	}

	// WeChat says the token expired: refreshed once and the call retried.
	w.emu.ExpireAccessTokens()
	if _, err := w.client.PhoneNumber(ctx, app, "p4", s.OpenID); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if n := w.emu.Calls("/cgi-bin/stable_token"); n != 2 {
		t.Errorf("stable_token called %d times, want 2", n)
	}
	if n := w.emu.Calls("/cgi-bin/token"); n != 0 {
		t.Errorf("legacy /cgi-bin/token called %d times", n)
	}
	if strings.Contains(w.logs.String(), "access_token=") {
		t.Error("an access_token URL reached the logs")
	}
}

// TestAccessTokenNoStampede: many first callers at once cause one fetch.
func TestAccessTokenNoStampede(t *testing.T) {
	t.Parallel()
	w := newWorld(t, func(c *wechat.Config) { c.Timeout = 2 * time.Second })
	w.emu.SetFault("/cgi-bin/stable_token", emulator.Fault{Hang: 150 * time.Millisecond, PassThrough: true})
	ctx := context.Background()
	s, err := w.client.Code2Session(ctx, app, "code-herd")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := w.client.CheckSession(ctx, app, s.OpenID, s.SessionKey)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := w.emu.Calls("/cgi-bin/stable_token"); n != 1 {
		t.Errorf("stable_token called %d times by 20 concurrent callers, want 1", n)
	}
}

func TestAccessTokenFetchRetriesBusy(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.emu.SetFault("/cgi-bin/stable_token", emulator.Fault{Errcode: -1, Times: 2})
	s, err := w.client.Code2Session(context.Background(), app, "code-busy")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.client.CheckSession(context.Background(), app, s.OpenID, s.SessionKey); err != nil {
		t.Fatalf("after two busy answers: %v", err)
	}
	if n := w.emu.Calls("/cgi-bin/stable_token"); n != 3 {
		t.Errorf("stable_token called %d times, want 3", n)
	}
	// A refused secret is not retried.
	w2 := newWorld(t, nil)
	bad := wechat.Credentials{AppID: appID, Secret: "wrong"}
	_, err = w2.client.CheckSession(context.Background(), bad, s.OpenID, s.SessionKey)
	var ae *wechat.APIError
	if !errors.As(err, &ae) || ae.Code != 40125 {
		t.Fatalf("wrong secret: %v", err)
	}
	if n := w2.emu.Calls("/cgi-bin/stable_token"); n != 1 {
		t.Errorf("stable_token called %d times, want 1 (no retry of 40125)", n)
	}
}

func TestCheckSession(t *testing.T) {
	w := newWorld(t, nil)
	ctx := context.Background()
	first, err := w.client.Code2Session(ctx, app, "code-a")
	if err != nil {
		t.Fatal(err)
	}
	w.emu.PresetLogin("code-b", first.OpenID, "", "BBBBBBBBBBBBBBBBBBBBBB==")
	second, err := w.client.Code2Session(ctx, app, "code-b")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		sk   secret.String
		want bool
	}{
		{"current key", second.SessionKey, true},
		{"replaced key", first.SessionKey, false},
		{"made-up key", "AAAAAAAAAAAAAAAAAAAAAA==", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := w.client.CheckSession(ctx, app, first.OpenID, tc.sk)
			if err != nil || got != tc.want {
				t.Errorf("CheckSession = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestNewClientRejectsBadBaseURL(t *testing.T) {
	for _, base := range []string{"ftp://x", "not a url", "/relative"} {
		if _, err := wechat.NewClient(wechat.Config{BaseURL: base}); err == nil {
			t.Errorf("accepted %q", base)
		}
	}
}

// TestLoginsReuseABoundedPool: logins reuse connections, and never have
// more open than the pool (the login slots, MaxConcurrent) holds. Open
// connections are counted on the client's side, from dial to Close: the
// server sees a close only when it next reads.
func TestLoginsReuseABoundedPool(t *testing.T) {
	const pool, logins = 4, 1000
	w := newWorld(t, func(c *wechat.Config) { c.MaxConcurrent = pool; c.Timeout = 5 * time.Second })
	var dialed, open, peak atomic.Int32
	tr := wechat.LoginTransport(w.client)
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		dialed.Add(1)
		n := open.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		return &countedConn{Conn: conn, open: &open}, nil
	}
	var wg sync.WaitGroup
	for g := range pool {
		wg.Go(func() {
			for i := range logins / pool {
				if _, err := w.client.Code2Session(context.Background(), app, fmt.Sprintf("pool-%d-%d", g, i)); err != nil {
					t.Errorf("login %d/%d: %v", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := w.emu.Calls("/sns/jscode2session"); n != logins {
		t.Fatalf("WeChat saw %d logins, want %d", n, logins)
	}
	if n := peak.Load(); n < 1 || n > pool {
		t.Errorf("%d logins had %d connections open at once, want 1..%d", logins, n, pool)
	}
	// net/http drops a connection whose request write it saw finish more
	// than 50 ms after the answer (maxWriteWaitBeforeConnReuse), which a
	// loaded machine can cause; otherwise every connection is reused.
	if n := dialed.Load(); n > logins/10 {
		t.Errorf("%d logins dialed %d connections: connections are not reused", logins, n)
	}
	t.Logf("%d logins: %d connections dialed, at most %d open at once", logins, dialed.Load(), peak.Load())
	// The unreplayable body never reaches the wire.
	if n := w.bodied.Load(); n != 0 {
		t.Errorf("%d login GETs carried a body or Transfer-Encoding", n)
	}
}

// countedConn takes itself off a count of open connections when closed.
type countedConn struct {
	net.Conn
	open *atomic.Int32
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.Conn.Close()
}

// attempts traces the connections one request goes out on: one entry per
// try, true where the connection was a reused one.
type attempts struct {
	mu    sync.Mutex
	tries []bool
}

func (a *attempts) ctx() context.Context {
	return httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.tries = append(a.tries, i.Reused)
		},
	})
}

func (a *attempts) get() []bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.tries)
}

// onReusedConnection runs warm (which leaves a connection idle) then try with
// fault set, until try's first attempt went out on a reused connection: net/http
// may drop a connection instead of pooling it on a loaded machine. It returns
// the attempts of that run and the code it used.
func onReusedConnection(t *testing.T, w *world, fault emulator.Fault, warm func(code string), try func(ctx context.Context, code string)) ([]bool, string) {
	t.Helper()
	for i := range 20 {
		warm(fmt.Sprintf("warm-%d", i))
		w.emu.SetFault("/sns/jscode2session", fault)
		var a attempts
		code := fmt.Sprintf("dropped-%d", i)
		try(a.ctx(), code)
		w.emu.SetFault("/sns/jscode2session", emulator.Fault{})
		if tries := a.get(); len(tries) > 0 && tries[0] {
			return tries, code
		}
	}
	t.Fatal("no login went out on a reused connection in 20 tries")
	return nil, ""
}

// TestLoginNeverResentOnReusedConnection: WeChat reads a login from a reused
// connection, then closes it (cleanly, or with a reset) without answering.
// net/http re-sends a replayable GET in exactly that case; the login must
// instead fail at once as an upstream error, the code having reached WeChat
// once. The control shows a plain keep-alive client re-sending in the same
// setup, so the test would fail if logins were replayable.
func TestLoginNeverResentOnReusedConnection(t *testing.T) {
	tests := []struct {
		name  string
		fault emulator.Fault
		// consumed: WeChat used the code before the connection went.
		consumed bool
	}{
		{"consumed, then closed", emulator.Fault{CloseAfterRead: true, Times: 1}, true},
		{"reset after read", emulator.Fault{Reset: true, Times: 1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, func(c *wechat.Config) { c.Timeout = 5 * time.Second })
			var err error
			tries, code := onReusedConnection(t, w, tc.fault,
				func(code string) {
					if _, err := w.client.Code2Session(context.Background(), app, code); err != nil {
						t.Fatal(err)
					}
				},
				func(ctx context.Context, code string) { _, err = w.client.Code2Session(ctx, app, code) })
			var ue *wechat.UpstreamError
			if !errors.As(err, &ue) || ue.Kind != wechat.Unreachable {
				t.Fatalf("err = %v, want Unreachable", err)
			}
			if len(tries) != 1 {
				t.Errorf("the login went out %d times (reused: %v), want once", len(tries), tries)
			}
			if n := w.emu.CodeArrivals(code); n != 1 {
				t.Errorf("the code reached WeChat %d times, want 1", n)
			}
			// The pool recovers.
			if _, err := w.client.Code2Session(context.Background(), app, "after"); err != nil {
				t.Errorf("login after the dropped one: %v", err)
			}

			// Control: a plain keep-alive client, same setup, re-sends.
			plain := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
			defer plain.CloseIdleConnections()
			get := func(ctx context.Context, code string) (int, error) {
				q := url.Values{"appid": {appID}, "secret": {appSecret}, "js_code": {code}, "grant_type": {"authorization_code"}}
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.url+"/sns/jscode2session?"+q.Encode(), nil)
				if err != nil {
					return 0, err
				}
				resp, err := plain.Do(req)
				if err != nil {
					return 0, err
				}
				defer resp.Body.Close()
				var ans struct{ Errcode int }
				err = json.NewDecoder(resp.Body).Decode(&ans)
				return ans.Errcode, err
			}
			var errcode int
			tries, code = onReusedConnection(t, w, tc.fault,
				func(code string) {
					if _, err := get(context.Background(), "plain-"+code); err != nil {
						t.Fatal(err)
					}
				},
				func(ctx context.Context, c string) { errcode, err = get(ctx, "plain-"+c) })
			if err != nil {
				t.Fatalf("plain client: %v (it did not re-send)", err)
			}
			if n := w.emu.CodeArrivals("plain-" + code); n != 2 || len(tries) != 2 {
				t.Errorf("plain client: the code arrived %d times in %d tries, want 2 (the control must re-send)", n, len(tries))
			}
			// Where WeChat had consumed the code, the user gets "code been
			// used" for a login WeChat accepted.
			if tc.consumed && errcode != wechat.CodeCodeUsed {
				t.Errorf("plain client: errcode %d, want 40163", errcode)
			}
		})
	}
}

// TestUpstreamEchoesAreRedacted: an upstream that echoes the request (its
// query string and body, holding the appsecret, code or access_token) as a
// malformed status line or as errmsg never gets those values into an
// error or a log line.
func TestUpstreamEchoesAreRedacted(t *testing.T) {
	t.Parallel()
	const code = "code-0123456789abcdef"
	tests := []struct {
		name  string
		path  string
		fault emulator.Fault
	}{
		{"login status line", "/sns/jscode2session", emulator.Fault{EchoStatus: true}},
		{"login errmsg", "/sns/jscode2session", emulator.Fault{EchoErrmsg: true}},
		{"stable_token status line", "/cgi-bin/stable_token", emulator.Fault{EchoStatus: true}},
		{"stable_token errmsg", "/cgi-bin/stable_token", emulator.Fault{EchoErrmsg: true}},
		{"checksession status line", "/wxa/checksession", emulator.Fault{EchoStatus: true}},
		{"checksession errmsg", "/wxa/checksession", emulator.Fault{EchoErrmsg: true}},
		{"phone status line", "/wxa/business/getuserphonenumber", emulator.Fault{EchoStatus: true}},
		{"phone errmsg", "/wxa/business/getuserphonenumber", emulator.Fault{EchoErrmsg: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, func(c *wechat.Config) { c.BreakerThreshold = 100 })
			ctx := context.Background()
			s, err := w.client.Code2Session(ctx, app, "holder-0123456789")
			if err != nil {
				t.Fatal(err)
			}
			w.emu.SetFault(tc.path, tc.fault)
			switch tc.path {
			case "/sns/jscode2session":
				_, err = w.client.Code2Session(ctx, app, code)
			case "/wxa/business/getuserphonenumber":
				_, err = w.client.PhoneNumber(ctx, app, code, s.OpenID)
			default:
				_, err = w.client.CheckSession(ctx, app, s.OpenID, s.SessionKey)
			}
			if err == nil {
				t.Fatal("no error")
			}
			var ue *wechat.UpstreamError
			var ae *wechat.APIError
			if !errors.As(err, &ue) && !errors.As(err, &ae) {
				t.Errorf("err = %T %v, want a typed WeChat error", err, err)
			}
			w.emu.SetFault(tc.path, emulator.Fault{})
			tok := currentAccessToken(t, w.url)
			text := err.Error() + "\n" + w.logs.String()
			for name, v := range map[string]string{"appsecret": appSecret, "access_token": tok, "code": code} {
				if strings.Contains(text, v) {
					t.Errorf("the %s reached the error or logs:\n%s", name, text)
				}
			}
			// The echo did reach the client: the test is not vacuous.
			if !strings.Contains(text, "[redacted]") {
				t.Errorf("nothing was redacted; did the fault echo?\n%s", text)
			}
		})
	}
}

// currentAccessToken asks the emulator's stable_token (normal mode answers
// the token already issued).
func currentAccessToken(t *testing.T, base string) string {
	t.Helper()
	body := `{"grant_type":"client_credential","appid":"` + appID + `","secret":"` + appSecret + `"}`
	resp, err := http.Post(base+"/cgi-bin/stable_token", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ans struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil || ans.AccessToken == "" {
		t.Fatalf("stable_token: %v %+v", err, ans)
	}
	return ans.AccessToken
}

// TestCode2SessionValidatesTheAnswer: a login answer whose openid, unionid or
// session_key is not what WeChat gives is a BadAnswer, not a session: a
// 5,000-character openid would make a token the service refuses on use.
func TestCode2SessionValidatesTheAnswer(t *testing.T) {
	const goodSK = "BBBBBBBBBBBBBBBBBBBBBB=="
	tests := []struct {
		name                string
		openid, unionid, sk string
		ok                  bool
	}{
		{"wechat's shape", "oAbC-_0123456789abcdefghijkl", "uAbC-_0123456789abcdefghijkl", goodSK, true},
		{"one character", "o", "", goodSK, true},
		{"64 characters", strings.Repeat("o", 64), "", goodSK, true},
		{"empty openid", "", "", goodSK, false},
		{"65-character openid", strings.Repeat("o", 65), "", goodSK, false},
		{"5000-character openid", strings.Repeat("o", 5000), "", goodSK, false},
		{"openid with a dot", "oAbC.0123456789abcdefghijkl", "", goodSK, false},
		{"openid with a space", "oAbC 0123456789abcdefghijkl", "", goodSK, false},
		{"openid with non-ASCII", "oAbCé0123456789abcdefghijk", "", goodSK, false},
		{"5000-character unionid", "oAbC", strings.Repeat("u", 5000), goodSK, false},
		{"unionid with a slash", "oAbC", "u/AbC", goodSK, false},
		{"session_key of 15 bytes", "oAbC", "", "BBBBBBBBBBBBBBBBBBBB", false},
		{"session_key of 17 bytes", "oAbC", "", "BBBBBBBBBBBBBBBBBBBBBBA=", false},
		{"session_key with a line break", "oAbC", "", "BBBBBBBBBBBB\nBBBBBBBBBB==", false},
		{"session_key not base64", "oAbC", "", "!!!!!!!!!!!!!!!!!!!!!!==", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, nil)
			w.emu.PresetLogin("preset", tc.openid, tc.unionid, tc.sk)
			s, err := w.client.Code2Session(context.Background(), app, "preset")
			if tc.ok {
				if err != nil || s.OpenID != tc.openid {
					t.Fatalf("Code2Session = %+v, %v", s, err)
				}
				return
			}
			var ue *wechat.UpstreamError
			if !errors.As(err, &ue) || ue.Kind != wechat.BadAnswer {
				t.Fatalf("err = %v, want BadAnswer", err)
			}
			if tc.openid != "" && strings.Contains(err.Error(), tc.openid) || tc.unionid != "" && strings.Contains(err.Error(), tc.unionid) {
				t.Errorf("the error quotes the answer: %v", err)
			}
		})
	}
}

// TestHugeExpiresInStillCaches: an expires_in past WeChat's documented 7200 s
// (here one that overflows time.Duration) is clamped to 7200 s: the token is
// cached, and replaced before 7200 s have passed.
func TestHugeExpiresInStillCaches(t *testing.T) {
	for _, expiresIn := range []int64{math.MaxInt64, 1 << 40, 10 * 86400} {
		t.Run(strconv.FormatInt(expiresIn, 10), func(t *testing.T) {
			var offset atomic.Int64
			w := newWorld(t, func(c *wechat.Config) {
				c.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
			})
			w.emu.SetFault("/cgi-bin/stable_token", emulator.Fault{ExpiresIn: expiresIn})
			ctx := context.Background()
			s, err := w.client.Code2Session(ctx, app, "holder")
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if _, err := w.client.CheckSession(ctx, app, s.OpenID, s.SessionKey); err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
			}
			if n := w.emu.Calls("/cgi-bin/stable_token"); n != 1 {
				t.Fatalf("stable_token called %d times for 3 calls, want 1 (cached)", n)
			}
			offset.Store(int64(7200 * time.Second))
			if _, err := w.client.CheckSession(ctx, app, s.OpenID, s.SessionKey); err != nil {
				t.Fatal(err)
			}
			if n := w.emu.Calls("/cgi-bin/stable_token"); n != 2 {
				t.Errorf("stable_token called %d times after 7200 s, want 2 (refreshed)", n)
			}
		})
	}
}

// TestLoginAllocatesNoCopyBuffer: the single-use login body is written
// without net.TCPConn.ReadFrom's generic copy, which allocated 32 KiB per
// login, a third of a login's garbage. The figure counts both ends (the
// emulator runs in this process): about 13 KiB per login with the fix, 45
// without it.
func TestLoginAllocatesNoCopyBuffer(t *testing.T) {
	emu := emulator.New(emulator.Config{Apps: map[string]string{appID: appSecret}})
	ts := httptest.NewServer(emu)
	defer ts.Close()
	c, err := wechat.NewClient(wechat.Config{BaseURL: ts.URL, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	login := func(i int) {
		if _, err := c.Code2Session(context.Background(), app, "alloc-"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	login(-1) // the pool's connection and the emulator's app state
	const n = 200
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range n {
		login(i)
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / n; per > 24<<10 {
		t.Fatalf("%d bytes allocated per login, want under 24 KiB: is the login body copied through a 32 KiB buffer again?", per)
	}
}

// BenchmarkCode2Session compares logins over the pooled connections with
// logins that each open a connection, as before keep-alive was safe.
func BenchmarkCode2Session(b *testing.B) {
	for _, mode := range []string{"pooled", "connection per login"} {
		b.Run(mode, func(b *testing.B) {
			emu := emulator.New(emulator.Config{Apps: map[string]string{appID: appSecret}})
			ts := httptest.NewServer(emu)
			defer ts.Close()
			cfg := wechat.Config{BaseURL: ts.URL, Timeout: 5 * time.Second}
			if mode != "pooled" {
				cfg.HTTPClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			}
			c, err := wechat.NewClient(cfg)
			if err != nil {
				b.Fatal(err)
			}
			var n atomic.Int64
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.Code2Session(context.Background(), app, "bench-"+strconv.FormatInt(n.Add(1), 10)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
