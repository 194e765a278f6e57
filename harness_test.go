package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/emulator"
	"github.com/wxtoken/wxtoken/internal/wxtest"
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
	keysDir string
	env     env
}

func newFixture(t testing.TB, appID string) *fixture {
	t.Helper()
	emu, wechatURL := wxtest.MustEmulator(t, map[string]string{appID: testSecret})
	dir := filepath.Join(t.TempDir(), "keys")
	f := &fixture{emu: emu, keysDir: dir, env: env{
		"WXTOKEN_ADDR":       "127.0.0.1:0",
		"WXTOKEN_KEYS_DIR":   dir,
		"WXTOKEN_ISSUER":     "https://auth.example.test",
		"WECHAT_APPID":       appID,
		"WECHAT_SECRET":      testSecret,
		"WECHAT_API_BASE":    wechatURL,
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
			// A connection the client dialed but never sent a request on
			// holds a graceful shutdown for 5 s (net/http counts it idle only
			// after that); the shared client's idle connections go first.
			http.DefaultClient.CloseIdleConnections()
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

// asMainEnv, set to 1 in a process's environment, makes this test binary
// run wxtoken's main instead of the tests (see TestMain).
const asMainEnv = "WXTOKEN_TEST_RUN_MAIN"

// TestMain lets the test binary stand in for the wxtoken binary: tests that
// need a real process (signals, several replicas) start this same binary
// with asMainEnv set, and it runs main, the code 'go build' would ship.
// That spares a build of wxtoken per test run. The parallel tests here
// wait on timers and processes, so up to 8 run at once.
func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	wxtest.ParallelWaiting(8)
	os.Exit(m.Run())
}

// process is a running 'wxtoken serve' in its own OS process.
type process struct {
	URL     string
	cmd     *exec.Cmd
	logs    *logBuffer
	exited  chan struct{} // closed once the process has exited and its stderr is read
	exitErr error         // cmd.Wait's answer; read it only after exited is closed
}

func startProcess(t testing.TB, e env, args ...string) *process {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), asMainEnv + "=1"}
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
	p := &process{cmd: cmd, logs: logs, exited: make(chan struct{})}
	go func() {
		_, _ = io.Copy(logs, stderr)
		p.exitErr = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
		}
	})
	select {
	case addr := <-logs.addr:
		p.URL = "http://" + addr
	case <-p.exited:
		t.Fatalf("process exited early: %v\n%s", p.exitErr, logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("process did not start\n%s", logs.String())
	}
	return p
}

// The request helpers below are the shared ones (internal/wxtest) under
// the short names this package's tests use.

// call is one HTTP exchange, read whole.
type call wxtest.Answer

func (c call) json(t testing.TB) map[string]any {
	t.Helper()
	return wxtest.Answer(c).JSON(t)
}

func do(t testing.TB, method, url, bearer, contentType string, body []byte) call {
	t.Helper()
	return call(wxtest.Do(t, method, url, bearer, contentType, body))
}

func postJSON(t testing.TB, url, bearer string, v any) call {
	t.Helper()
	return call(wxtest.PostJSON(t, url, bearer, v))
}

// login logs in with code for the default app and returns the access token
// and the whole answer.
func login(t testing.TB, base, code string) (string, map[string]any) {
	t.Helper()
	return wxtest.Login(t, base, "", code)
}

// assertProblem checks the RFC 9457 shape and the stable type.
func assertProblem(t testing.TB, c call, status int, typ string) map[string]any {
	t.Helper()
	return wxtest.WantProblem(t, wxtest.Answer(c), status, typ)
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	return wxtest.MustJSON(t, v)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	wxtest.Eventually(t, within, what, cond)
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
