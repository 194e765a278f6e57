package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/emulator"
)

// Test fixtures: a made-up mini program known to the test emulator.
const (
	testAppID  = "wx1111222233334444"
	testSecret = "s3cr3t-appsecret-never-logged-0001"
)

// logBuffer collects a server's stderr and tells when it is listening.
type logBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	line  []byte
	addr  chan string
	found bool
}

func newLogBuffer() *logBuffer { return &logBuffer{addr: make(chan string, 1)} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	b.line = append(b.line, p...)
	for {
		i := bytes.IndexByte(b.line, '\n')
		if i < 0 {
			break
		}
		line := b.line[:i]
		b.line = b.line[i+1:]
		if b.found || !bytes.Contains(line, []byte(`"msg":"listening"`)) {
			continue
		}
		var rec struct{ Addr string }
		if json.Unmarshal(line, &rec) == nil && rec.Addr != "" {
			b.found = true
			b.addr <- rec.Addr
		}
	}
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// env is a test's environment; getenv reads only it, never the real one.
type env map[string]string

func (e env) getenv(k string) string { return e[k] }

func (e env) with(kv ...string) env {
	out := env{}
	for k, v := range e {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// fixture is one test's world: a WeChat emulator on loopback and a keys
// directory made by the real 'wxtoken keys init'.
type fixture struct {
	emu     *emulator.Emulator
	wechat  *httptest.Server
	keysDir string
	env     env
}

func newFixture(t testing.TB, appID string) *fixture {
	t.Helper()
	emu := emulator.New(emulator.Config{Apps: map[string]string{appID: testSecret}, UnionID: true})
	ts := httptest.NewServer(emu)
	t.Cleanup(ts.Close)
	dir := filepath.Join(t.TempDir(), "keys")
	f := &fixture{emu: emu, wechat: ts, keysDir: dir, env: env{
		"WXTOKEN_ADDR":       "127.0.0.1:0",
		"WXTOKEN_KEYS_DIR":   dir,
		"WXTOKEN_ISSUER":     "https://auth.example.test",
		"WECHAT_APPID":       appID,
		"WECHAT_SECRET":      testSecret,
		"WECHAT_API_BASE":    ts.URL,
		"WXTOKEN_LOGIN_RATE": "0",
	}}
	mustRun(t, f.env, "keys", "init")
	return f
}

// mustRun runs a one-shot command in-process and returns its stdout.
func mustRun(t testing.TB, e env, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), append([]string{"wxtoken"}, args...), e.getenv, &out, &errOut); err != nil {
		t.Fatalf("wxtoken %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String()
}

// running is a running 'wxtoken serve', in-process.
type running struct {
	URL  string
	logs *logBuffer
	stop func() error
}

func startServer(t testing.TB, e env, args ...string) *running {
	t.Helper()
	logs := newLogBuffer()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"wxtoken", "serve"}, args...), e.getenv, io.Discard, logs)
	}()
	s := &running{logs: logs}
	var once sync.Once
	var stopErr error
	s.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(20 * time.Second):
				stopErr = errors.New("server did not stop")
			}
		})
		return stopErr
	}
	t.Cleanup(func() { _ = s.stop() })
	select {
	case addr := <-logs.addr:
		s.URL = "http://" + addr
	case err := <-done:
		t.Fatalf("serve exited early: %v\n%s", err, logs.String())
	case <-time.After(15 * time.Second):
		t.Fatalf("serve did not start\n%s", logs.String())
	}
	return s
}

// binary builds wxtoken once per test run, for tests that need a real
// process (signals, several replicas).
var buildOnce struct {
	sync.Once
	path string
	err  error
}

func wxtokenBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wxtoken-bin-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "wxtoken")
		cmd := exec.Command("go", "build", "-o", buildOnce.path, ".")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildOnce.err = errors.New(string(out))
		}
	})
	if buildOnce.err != nil {
		t.Fatalf("build wxtoken: %v", buildOnce.err)
	}
	return buildOnce.path
}

// process is a running 'wxtoken serve' in its own OS process.
type process struct {
	URL  string
	cmd  *exec.Cmd
	logs *logBuffer
	done chan error
}

func startProcess(t testing.TB, e env, args ...string) *process {
	t.Helper()
	bin := wxtokenBinary(t)
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range e {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logs := newLogBuffer()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, logs: logs, done: make(chan error, 1)}
	go func() {
		r := bufio.NewReader(stderr)
		_, _ = io.Copy(logs, r)
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	})
	select {
	case addr := <-logs.addr:
		p.URL = "http://" + addr
	case err := <-p.done:
		t.Fatalf("process exited early: %v\n%s", err, logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("process did not start\n%s", logs.String())
	}
	return p
}

// call is one HTTP exchange, decoded.
type call struct {
	Status int
	Header http.Header
	Body   []byte
}

func (c call) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(c.Body, &m); err != nil {
		t.Fatalf("answer is not a JSON object: %v: %s", err, c.Body)
	}
	return m
}

func do(t testing.TB, method, url, bearer, contentType string, body []byte) call {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return call{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

func postJSON(t testing.TB, url, bearer string, v any) call {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, http.MethodPost, url, bearer, "application/json", b)
}

// login logs in with code and returns the access token.
func login(t testing.TB, base, code string) (string, map[string]any) {
	t.Helper()
	c := postJSON(t, base+"/v1/login", "", map[string]string{"code": code})
	if c.Status != http.StatusOK {
		t.Fatalf("login %q: %d %s", code, c.Status, c.Body)
	}
	m := c.json(t)
	tok, _ := m["access_token"].(string)
	if tok == "" {
		t.Fatalf("login answer has no access_token: %s", c.Body)
	}
	return tok, m
}

// assertProblem checks the RFC 9457 shape and the stable type.
func assertProblem(t testing.TB, c call, status int, typ string) map[string]any {
	t.Helper()
	if c.Status != status {
		t.Fatalf("status = %d, want %d: %s", c.Status, status, c.Body)
	}
	if ct := c.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json: %s", ct, c.Body)
	}
	p := c.json(t)
	for _, f := range []string{"type", "title", "detail"} {
		if s, _ := p[f].(string); s == "" {
			t.Errorf("problem has no %q: %s", f, c.Body)
		}
	}
	if st, _ := p["status"].(float64); int(st) != status {
		t.Errorf("problem status = %v, want %d", p["status"], status)
	}
	if typ != "" && p["type"] != "urn:wxtoken:problem:"+typ {
		t.Errorf("problem type = %v, want urn:wxtoken:problem:%s", p["type"], typ)
	}
	return p
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sha1Hex(s string) string {
	h := sha1.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

func doHeader(t testing.TB, url, name, value string) call {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(name, value)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return call{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// stoppedLogs stops the server and answers everything it logged. A check
// that a secret is absent from the logs must read them this way: info lines
// wait in a batch (internal/logbuf) until the server flushes them.
func (s *running) stoppedLogs(t testing.TB) string {
	t.Helper()
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	return s.logs.String()
}
