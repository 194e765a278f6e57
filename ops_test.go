package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/emulator"
	"github.com/wxtoken/wxtoken/internal/wxtest"
	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/wechat"
)

// TestLoginRateLimitUnderLoad pushes one client far past its login limit on
// loopback and shows it gets fast 429s with Retry-After, while another client
// and the health check are served normally.
func TestLoginRateLimitUnderLoad(t *testing.T) {
	f := newFixture(t, testAppID)
	// The proxy on loopback is trusted, so X-Forwarded-For names the client
	// (documentation addresses: no traffic goes to them).
	s := startServer(t, f.env.with("WXTOKEN_LOGIN_RATE", "5", "WXTOKEN_LOGIN_BURST", "10",
		"WXTOKEN_TRUSTED_PROXIES", "127.0.0.1/32,::1"))
	const attacker, bystander = "203.0.113.7", "198.51.100.23"
	const total, workers = 300, 16

	type result struct {
		status  int
		retry   string
		latency time.Duration
	}
	results := make(chan result, total)
	var wg sync.WaitGroup
	jobs := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				req, _ := http.NewRequest("POST", s.URL+"/v1/login", strings.NewReader(fmt.Sprintf(`{"code":"flood-%d"}`, i)))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Forwarded-For", attacker)
				start := time.Now()
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Errorf("request %d: %v", i, err)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				results <- result{resp.StatusCode, resp.Header.Get("Retry-After"), time.Since(start)}
			}
		}()
	}
	start := time.Now()
	go func() {
		for i := 0; i < total; i++ {
			jobs <- i
		}
		close(jobs)
	}()

	// While the flood runs, the bystander logs in and the health check answers.
	bystanderReq, _ := http.NewRequest("POST", s.URL+"/v1/login", strings.NewReader(`{"code":"bystander"}`))
	bystanderReq.Header.Set("Content-Type", "application/json")
	bystanderReq.Header.Set("X-Forwarded-For", bystander)
	resp, err := http.DefaultClient.Do(bystanderReq)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("bystander login = %d during the flood", resp.StatusCode)
	}
	if c := do(t, "GET", s.URL+"/healthz", "", "", nil); c.Status != 200 {
		t.Errorf("healthz = %d during the flood", c.Status)
	}
	wg.Wait()
	close(results)
	elapsed := time.Since(start)

	var ok, limited int
	var limitedLatency []time.Duration
	for r := range results {
		switch r.status {
		case 200:
			ok++
		case 429:
			limited++
			limitedLatency = append(limitedLatency, r.latency)
			if r.retry == "" {
				t.Error("429 without Retry-After")
			}
		default:
			t.Errorf("unexpected status %d", r.status)
		}
	}
	// Burst 10 plus 5/s for the flood's duration, with one second of slack.
	maxOK := 10 + int(5*elapsed.Seconds()) + 5
	if ok < 10 || ok > maxOK || limited == 0 {
		t.Fatalf("%d ok, %d limited in %v; want 10..%d ok", ok, limited, elapsed, maxOK)
	}
	sort.Slice(limitedLatency, func(i, j int) bool { return limitedLatency[i] < limitedLatency[j] })
	p99 := limitedLatency[len(limitedLatency)*99/100]
	t.Logf("flood: %d requests in %v: %d ok, %d limited, 429 p50 %v p99 %v", total, elapsed, ok, limited,
		limitedLatency[len(limitedLatency)/2], p99)
	if p99 > 500*time.Millisecond {
		t.Errorf("429s are slow: p99 %v", p99)
	}
	if n := f.emu.Calls("/sns/jscode2session"); n > ok+1 {
		t.Errorf("WeChat saw %d logins; limited requests must not reach it", n)
	}

	// Without the trusted proxy, X-Forwarded-For is ignored: a client cannot
	// escape its limit by inventing addresses.
	s2 := startServer(t, f.env.with("WXTOKEN_LOGIN_RATE", "1", "WXTOKEN_LOGIN_BURST", "2"))
	var limited2 int
	for i := 0; i < 6; i++ {
		req, _ := http.NewRequest("POST", s2.URL+"/v1/login", strings.NewReader(fmt.Sprintf(`{"code":"spoof-%d"}`, i)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i+1))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 429 {
			limited2++
		}
	}
	if limited2 < 3 {
		t.Errorf("spoofed X-Forwarded-For escaped the limit: only %d of 6 limited", limited2)
	}
}

// TestFailingWeChatFailsFast: once WeChat has failed a few times in a row
// the circuit opens, logins get 503 with Retry-After at once, and WeChat is
// left alone until the cooldown ends.
func TestFailingWeChatFailsFast(t *testing.T) {
	f := newFixture(t, testAppID)
	s := startServer(t, f.env)
	f.emu.SetFault("/sns/jscode2session", emulator.Fault{HTTPStatus: 502})
	for i := 0; i < 5; i++ {
		c := postJSON(t, s.URL+"/v1/login", "", map[string]string{"code": fmt.Sprintf("down-%d", i)})
		assertProblem(t, c, 502, "wechat-error")
	}
	for i := 0; i < 20; i++ {
		start := time.Now()
		c := postJSON(t, s.URL+"/v1/login", "", map[string]string{"code": fmt.Sprintf("open-%d", i)})
		assertProblem(t, c, 503, "unavailable")
		if c.Header.Get("Retry-After") == "" {
			t.Fatal("no Retry-After while the circuit is open")
		}
		if d := time.Since(start); d > 200*time.Millisecond {
			t.Errorf("fast-fail took %v", d)
		}
	}
	if n := f.emu.Calls("/sns/jscode2session"); n != 5 {
		t.Errorf("WeChat saw %d calls; an open circuit must not call it", n)
	}
	if c := do(t, "GET", s.URL+"/healthz", "", "", nil); c.Status != 200 {
		t.Errorf("healthz = %d while WeChat is down", c.Status)
	}
}

// TestSIGTERMDrains: SIGTERM in the middle of a burst of logins. Every
// login in flight when the signal comes gets a full 200; while they drain,
// new connections are refused; the process exits 0; and a restarted server
// accepts the tokens issued before. The signal is sent once WeChat has seen
// every login of the burst (each then waits there a second), so "in
// flight" is a fact, not a guess from timing.
func TestSIGTERMDrains(t *testing.T) {
	if testing.Short() {
		t.Skip("starts OS processes")
	}
	t.Parallel()
	f := newFixture(t, testAppID)
	// WeChat answers slowly, so requests are in flight when SIGTERM arrives.
	f.emu.SetFault("/sns/jscode2session", emulator.Fault{Hang: time.Second, PassThrough: true})
	p := startProcess(t, f.env)
	hostPort := strings.TrimPrefix(p.URL, "http://")

	const inFlight, late = 20, 20
	type outcome struct {
		status int
		token  string
		err    error
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	send := func(code string) outcome {
		req, _ := http.NewRequest("POST", p.URL+"/v1/login", strings.NewReader(`{"code":"`+code+`"}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return outcome{err: err}
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return outcome{status: resp.StatusCode, err: fmt.Errorf("broken body: %w", err)}
		}
		o := outcome{status: resp.StatusCode}
		if resp.StatusCode == 200 {
			o.token = extractToken(b)
		}
		return o
	}
	drained := make(chan outcome, inFlight)
	for i := range inFlight {
		go func() { drained <- send(fmt.Sprintf("drain-%d", i)) }()
	}
	eventually(t, 10*time.Second, "every login of the burst reaches WeChat", func() bool {
		return f.emu.Calls("/sns/jscode2session") == inFlight
	})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	// While the in-flight logins drain (WeChat takes 1 s), a new connection
	// is refused.
	eventually(t, 500*time.Millisecond, "new connections are refused while draining", func() bool {
		conn, err := net.DialTimeout("tcp", hostPort, 100*time.Millisecond)
		if err == nil {
			conn.Close()
			return false
		}
		return errors.Is(err, syscall.ECONNREFUSED)
	})
	for i := range late {
		if o := send(fmt.Sprintf("late-%d", i)); !isCleanRefusal(o.err) {
			t.Errorf("a login sent while draining: status %d, err %v; want the connection refused", o.status, o.err)
		}
	}
	select {
	case <-p.exited:
		t.Fatalf("the process exited (%v) before its in-flight requests finished", p.exitErr)
	default:
	}

	var tokens []string
	for range inFlight {
		o := <-drained
		if o.err != nil || o.status != 200 || o.token == "" {
			t.Errorf("a login in flight at SIGTERM was not served in full: status %d, err %v", o.status, o.err)
			continue
		}
		tokens = append(tokens, o.token)
	}
	select {
	case <-p.exited:
		if p.exitErr != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", p.exitErr, p.logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("process did not exit after SIGTERM")
	}
	f.emu.SetFault("/sns/jscode2session", emulator.Fault{})
	p2 := startProcess(t, f.env)
	for _, tok := range tokens {
		if c := postJSON(t, p2.URL+"/v1/session/check", tok, nil); c.Status != 200 {
			t.Errorf("restarted server refused an earlier token: %d %s", c.Status, c.Body)
		}
	}
}

func extractToken(body []byte) string {
	s := string(body)
	i := strings.Index(s, `"access_token":"`)
	if i < 0 || !strings.HasSuffix(strings.TrimSpace(s), "}") {
		return ""
	}
	s = s[i+len(`"access_token":"`):]
	j := strings.IndexByte(s, '"')
	if j < 0 {
		return ""
	}
	return s[:j]
}

// isCleanRefusal: the connection was refused before any request was sent.
func isCleanRefusal(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}

// TestNoSecretsInLogs runs every endpoint, failures included, at debug level
// and greps the captured logs for anything secret or personal.
func TestNoSecretsInLogs(t *testing.T) {
	t.Parallel()
	f := newFixture(t, wxtest.VectorAppID)
	s := startServer(t, f.env.with("WXTOKEN_LOG_LEVEL", "debug", "WXTOKEN_LOGIN_RATE", "1", "WXTOKEN_LOGIN_BURST", "8",
		"WXTOKEN_RELOAD_INTERVAL", "100ms"))

	f.emu.PresetLogin("logs-vector", wxtest.VectorOpenID, "ocMvos6NjeKLIBqg5Mr9QjxrP1FA", wxtest.VectorSessionKey)
	tok, _ := login(t, s.URL, "logs-vector")
	f.emu.PresetLogin("logs-sign", "oSignUser00000000000000000000", "", wxtest.VectorRawSessionKey)
	tok2, _ := login(t, s.URL, "logs-sign")
	phone := postJSON(t, s.URL+"/v1/phone-number", tok, map[string]string{"code": "logs-phone"})
	if phone.Status != 200 {
		t.Fatalf("phone = %d", phone.Status)
	}
	pure := phone.json(t)["purePhoneNumber"].(string)
	postJSON(t, s.URL+"/v1/decrypt", tok, map[string]string{"encryptedData": wxtest.VectorEncryptedData, "iv": wxtest.VectorIV})
	postJSON(t, s.URL+"/v1/decrypt", tok2, map[string]string{"encryptedData": wxtest.VectorEncryptedData, "iv": wxtest.VectorIV})
	postJSON(t, s.URL+"/v1/decrypt", tok, map[string]string{"encryptedData": "a b", "iv": wxtest.VectorIV})
	postJSON(t, s.URL+"/v1/userinfo", tok2, map[string]string{"rawData": wxtest.VectorRawData, "signature": wxtest.VectorSignature})
	postJSON(t, s.URL+"/v1/userinfo", tok, map[string]string{"rawData": wxtest.VectorRawData, "signature": wxtest.VectorSignature})
	postJSON(t, s.URL+"/v1/session/check", tok, nil)
	postJSON(t, s.URL+"/v1/session/check", tok+"x", nil)
	postJSON(t, s.URL+"/v1/phone-number", tok, map[string]string{"code": "err-40029"})
	postJSON(t, s.URL+"/v1/login", "", map[string]string{"code": "err-40163"})
	postJSON(t, s.URL+"/v1/login", "", map[string]string{"code": "err--1"})
	f.emu.ExpireAccessTokens()
	postJSON(t, s.URL+"/v1/session/check", tok, nil)
	for i := 0; i < 10; i++ { // run into the login rate limit
		postJSON(t, s.URL+"/v1/login", "", map[string]string{"code": fmt.Sprintf("logs-flood-%d", i)})
	}
	f.emu.SetFault("/sns/jscode2session", emulator.Fault{Garbage: true, Times: 1})
	postJSON(t, s.URL+"/v1/login", "", map[string]string{"code": "logs-garbage"})
	// A rotation and its reload log about keys; a broken file logs an error.
	mustRun(t, f.env, "keys", "rotate")
	eventually(t, 5*time.Second, "the rotation is reloaded", func() bool { return strings.Contains(s.logs.String(), `"msg":"keys loaded"`) })
	keyMaterial := keyMaterialIn(t, f.keysDir)

	logs := s.stoppedLogs(t)
	if !strings.Contains(logs, `"msg":"request"`) {
		t.Fatalf("no request logs captured:\n%s", logs)
	}
	forbidden := map[string]string{
		"appsecret":   testSecret,
		"token":       tok,
		"token body":  strings.Split(tok, ".")[1],
		"token sig":   strings.Split(tok2, ".")[2],
		"login code":  "logs-vector",
		"phone code":  "logs-phone",
		"phone":       pure,
		"nickname":    "Band",
		"city":        "Guangzhou",
		"data":        wxtest.VectorEncryptedData[:40],
		"rawData":     `"nickName"`,
		"signature":   wxtest.VectorSignature,
		"unionid":     "ocMvos6NjeKLIBqg5Mr9QjxrP1FA",
		"access tok":  "ACCESS_TOKEN",
		"emulator sk": f.emu.CurrentSessionKey(wxtest.VectorAppID, "oSignUser00000000000000000000"),
	}
	for _, sk := range []string{wxtest.VectorSessionKey, wxtest.VectorRawSessionKey} {
		for i, enc := range encodingsOf(sk) {
			forbidden[fmt.Sprintf("session key form %d", i)] = enc
		}
	}
	for i, m := range keyMaterial {
		forbidden[fmt.Sprintf("key material %d", i)] = m
	}
	for what, value := range forbidden {
		if value != "" && strings.Contains(logs, value) {
			t.Errorf("logs contain the %s", what)
		}
	}
}

// keyMaterialIn lists the secret parts of every key file in dir: each
// base64 line of a PEM body and each JWK "k" value (and their halves, in
// case a log truncates).
func keyMaterialIn(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasSuffix(e.Name(), ".pem"):
			for _, line := range strings.Split(string(raw), "\n") {
				if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
					out = append(out, line, line[:len(line)/2])
				}
			}
		case strings.HasSuffix(e.Name(), ".jwk"):
			var jwk struct{ K string }
			if err := json.Unmarshal(raw, &jwk); err != nil || len(jwk.K) < 32 {
				t.Fatalf("%s: %v", e.Name(), err)
			}
			out = append(out, jwk.K, jwk.K[:len(jwk.K)/2])
		}
	}
	if len(out) < 8 {
		t.Fatalf("found only %d pieces of key material in %s", len(out), dir)
	}
	return out
}

// TestNoSecretsInDevLogs: dev mode (keys made on first use, the emulator in
// process, /dev/encrypt) logs no key material, token, code or user data.
func TestNoSecretsInDevLogs(t *testing.T) {
	t.Parallel()
	keysDir := filepath.Join(t.TempDir(), "devkeys")
	s := startServer(t, env{"WXTOKEN_ADDR": "127.0.0.1:0", "WXTOKEN_KEYS_DIR": keysDir, "WXTOKEN_LOG_LEVEL": "debug"}, "--dev")
	tok, answer := login(t, s.URL, "dev-logs-code")
	enc := postJSON(t, s.URL+"/dev/encrypt", tok, map[string]any{"nickName": "Zhang Wei", "city": "Chengdu"})
	if enc.Status != 200 {
		t.Fatalf("dev encrypt: %d %s", enc.Status, enc.Body)
	}
	pair := enc.json(t)
	for _, path := range []string{"/v1/decrypt", "/v1/userinfo"} {
		if c := postJSON(t, s.URL+path, tok, pair); c.Status != 200 {
			t.Fatalf("%s: %d %s", path, c.Status, c.Body)
		}
	}
	phone := postJSON(t, s.URL+"/v1/phone-number", tok, map[string]string{"code": "dev-logs-phone"})
	if phone.Status != 200 {
		t.Fatalf("phone: %d %s", phone.Status, phone.Body)
	}
	postJSON(t, s.URL+"/v1/session/check", tok, nil)
	postJSON(t, s.URL+"/dev/encrypt", tok+"x", map[string]any{"nickName": "Zhang Wei"})

	logs := s.stoppedLogs(t)
	if !strings.Contains(logs, `"msg":"request"`) {
		t.Fatalf("no request logs captured:\n%s", logs)
	}
	forbidden := append(keyMaterialIn(t, keysDir), tok, strings.Split(tok, ".")[2], "dev-logs-code", "dev-logs-phone",
		"Zhang Wei", "Chengdu", pair["encryptedData"].(string)[:32], pair["signature"].(string),
		phone.json(t)["purePhoneNumber"].(string))
	if u, _ := answer["unionid"].(string); u != "" {
		forbidden = append(forbidden, u)
	}
	for i, value := range forbidden {
		if strings.Contains(logs, value) {
			t.Errorf("dev logs contain secret %d (%.6s…)", i, value)
		}
	}
}

func TestSecretFromFile(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, f.env.with("WECHAT_SECRET", "", "WECHAT_SECRET_FILE", path))
	login(t, s.URL, "code-from-file")

	err := run(t.Context(), []string{"wxtoken", "serve"}, f.env.with("WECHAT_SECRET_FILE", path).getenv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("both secret sources: %v", err)
	}
}

func TestWarnsOnReadableKeyFiles(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	entries, _ := os.ReadDir(f.keysDir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".pem") {
			if err := os.Chmod(filepath.Join(f.keysDir, e.Name()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	s := startServer(t, f.env)
	if !strings.Contains(s.logs.String(), "0644") {
		t.Errorf("no warning about a world-readable key file:\n%s", s.logs.String())
	}
}

// TestDecryptVectorLibrary double-checks the test vector with the library
// call, so an HTTP-level failure points at the wiring.
func TestDecryptVectorLibrary(t *testing.T) {
	t.Parallel()
	data, err := wechat.DecryptUserData(secret.String(wxtest.VectorSessionKey),
		wechat.Owner{AppID: wxtest.VectorAppID, OpenID: wxtest.VectorOpenID, UnionID: wxtest.VectorUnionID}, wxtest.VectorEncryptedData, wxtest.VectorIV)
	if err != nil || !strings.Contains(string(data), `"nickName":"Band"`) {
		t.Fatalf("vector: %v %s", err, data)
	}
}

// TestSlowClientsAreCutOff: through serve, a client that never finishes
// its headers (slowloris) is cut off by the header timeout while others are
// served, one that trickles its body at WXTOKEN_READ_TIMEOUT, an idle
// keep-alive connection at WXTOKEN_IDLE_TIMEOUT, and an oversized header
// block is refused before any handler runs. The header timeout is the
// smaller of 5 s and WXTOKEN_READ_TIMEOUT (TestServerConfigTimeouts), so
// 1 s here; server's TestSlowHeadersAreCutOff shows it cuts a slowloris
// before the read timeout would.
func TestSlowClientsAreCutOff(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testAppID)
	s := startServer(t, f.env.with("WXTOKEN_READ_TIMEOUT", "1s", "WXTOKEN_IDLE_TIMEOUT", "1s"))
	hostPort := strings.TrimPrefix(s.URL, "http://")

	t.Run("dribbled headers", func(t *testing.T) {
		t.Parallel()
		conn := wxtest.RawConn(t, hostPort, "POST /v1/login HTTP/1.1\r\nHost: wxtoken\r\nContent-Type: application/json\r\n")
		// Others are served while the slow client holds its connection.
		if c := do(t, http.MethodGet, s.URL+"/healthz", "", "", nil); c.Status != http.StatusOK {
			t.Fatalf("healthz while a slow client waits: %d", c.Status)
		}
		if d := wxtest.HeldOpen(t, conn, false); d < 700*time.Millisecond || d > 4*time.Second {
			t.Fatalf("the slow connection was closed after %v, want about the 1 s header timeout", d)
		}
	})
	t.Run("trickled body", func(t *testing.T) {
		t.Parallel()
		conn := wxtest.RawConn(t, hostPort, "POST /v1/login HTTP/1.1\r\nHost: wxtoken\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
		if d := wxtest.HeldOpen(t, conn, true); d < 700*time.Millisecond || d > 4*time.Second {
			t.Fatalf("a trickled body held the connection %v; want about the 1 s read timeout", d)
		}
	})
	t.Run("idle keep-alive", func(t *testing.T) {
		t.Parallel()
		conn, resp := wxtest.KeepAlive(t, hostPort, "/healthz")
		if resp == nil || resp.StatusCode != 200 {
			t.Fatalf("healthz: %v", resp)
		}
		if d := wxtest.HeldOpen(t, conn, false); d < 700*time.Millisecond || d > 4*time.Second {
			t.Fatalf("an idle keep-alive connection stayed open %v; want about the 1 s idle timeout", d)
		}
	})
	t.Run("oversized headers", func(t *testing.T) {
		t.Parallel()
		c := wxtest.Send(t, http.MethodGet, s.URL+"/healthz", nil, map[string]string{"X-Padding": strings.Repeat("a", 64<<10)})
		if c.Status != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("a 64 KiB header: %d, want 431", c.Status)
		}
	})
}
