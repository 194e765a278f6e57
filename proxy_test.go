package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/wechat"
)

// requireHAProxyEnv makes a missing haproxy a failure instead of a skip:
// .ci/run installs haproxy and sets it, so CI never skips this silently.
const requireHAProxyEnv = "WXTOKEN_REQUIRE_HAPROXY"

// haproxyPath finds Debian's haproxy, or skips (locally) or fails (in CI).
func haproxyPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"haproxy", "/usr/sbin/haproxy"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv(requireHAProxyEnv) != "" {
		t.Fatalf("haproxy is not installed but %s is set; install it: apt-get install -y haproxy", requireHAProxyEnv)
	}
	t.Skip("haproxy is not installed (apt-get install -y haproxy); skipping the replicas-behind-a-proxy test")
	return ""
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startHAProxy runs haproxy in the foreground in front of the replicas:
// round robin, health checks on /readyz, a failed connection redispatched to
// another replica, and no server-side connection reuse, so a request is lost
// only if a replica dies while it holds it. Each answer names its replica in
// X-Replica.
func startHAProxy(t *testing.T, backends []string) string {
	t.Helper()
	bin := haproxyPath(t)
	front := freePort(t)
	var servers bytes.Buffer
	for i, b := range backends {
		fmt.Fprintf(&servers, "  server r%d %s check inter 100ms fall 1 rise 2\n", i, b)
	}
	cfg := fmt.Sprintf(`global
  maxconn 2000
defaults
  mode http
  timeout connect 1s
  timeout client 20s
  timeout server 20s
  retries 3
  option redispatch 1
  option http-server-close
frontend fe
  bind %s
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk GET /readyz
  http-response set-header X-Replica %%[srv_name]
%s`, front, servers.String())
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-db", "-f", path)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	base := "http://" + front
	eventually(t, 10*time.Second, "haproxy serves /readyz", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return base
}

// outcome is one request of the load, as the client saw it.
type outcome struct {
	start, end time.Time
	status     int // 0: the connection failed
	replica    string
	token      string // a login's token
	err        error
}

// TestReplicasBehindHAProxy: three real wxtoken processes behind a real
// haproxy share only the keys directory. Under a mixed load of logins and
// bearer calls one replica is killed: requests were spread over all three,
// only requests in flight at the kill fail, and every token from any replica
// (the dead one's too) works on every surviving one.
func TestReplicasBehindHAProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts OS processes")
	}
	haproxyPath(t)
	t.Parallel()
	f := newFixture(t, testAppID)
	e := f.env.with("WXTOKEN_USER_RATE", "0")
	replicas := []*process{startProcess(t, e), startProcess(t, e), startProcess(t, e)}
	backends := make([]string, len(replicas))
	for i, r := range replicas {
		backends[i] = r.URL[len("http://"):]
	}
	base := startHAProxy(t, backends)

	client := &http.Client{Timeout: 20 * time.Second}
	send := func(path, bearer string, body any) outcome {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		o := outcome{start: time.Now()}
		resp, err := client.Do(req)
		o.err = err
		if err == nil {
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			o.status, o.replica = resp.StatusCode, resp.Header.Get("X-Replica")
			var m struct {
				AccessToken string `json:"access_token"`
				OpenID      string `json:"openid"`
			}
			if json.Unmarshal(raw, &m) == nil {
				o.token = m.AccessToken + " " + m.OpenID
			}
		}
		o.end = time.Now()
		return o
	}

	const workers = 6
	var (
		mu       sync.Mutex
		outcomes []outcome
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	record := func(o outcome) {
		mu.Lock()
		outcomes = append(outcomes, o)
		mu.Unlock()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(outcomes) }
	for w := range workers {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				o := send("/v1/login", "", map[string]string{"code": fmt.Sprintf("code-proxy-%d-%d", w, i)})
				record(o)
				var tok, openid string
				if _, err := fmt.Sscan(o.token, &tok, &openid); err != nil || o.status != http.StatusOK {
					continue
				}
				sk := secret.String(f.emu.CurrentSessionKey(testAppID, openid))
				data, iv, err := wechat.EncryptUserData(sk, []byte(`{"stepInfoList":[],"watermark":{"appid":"`+testAppID+`","timestamp":1}}`))
				if err != nil {
					t.Error(err)
					return
				}
				record(send("/v1/decrypt", tok, map[string]string{"encryptedData": data, "iv": iv}))
			}
		})
	}
	eventually(t, 30*time.Second, "load before the kill", func() bool { return count() >= 150 })
	before := count()
	killed := replicas[1]
	killAt := time.Now()
	if err := killed.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// The signal is asynchronous: the replica may still take requests until
	// it has died, so "in flight" runs until the process is reaped.
	<-killed.exited
	deadAt := time.Now()
	eventually(t, 30*time.Second, "load after the kill", func() bool { return count() >= before+150 })
	stop.Store(true)
	wg.Wait()

	served := map[string]int{}
	tokensBy := map[string][]string{}
	var failed []outcome
	afterKill := 0
	for _, o := range outcomes {
		if o.status != http.StatusOK {
			failed = append(failed, o)
			continue
		}
		if o.start.Before(killAt) {
			served[o.replica]++
		} else {
			afterKill++
		}
		if o.token != " " && o.token != "" {
			tokensBy[o.replica] = append(tokensBy[o.replica], o.token)
		}
	}
	t.Logf("%d requests: before the kill %v; %d ok after it; %d failed", len(outcomes), served, afterKill, len(failed))
	for _, o := range failed {
		t.Logf("failed in flight: status %d, err %v", o.status, o.err)
	}
	for i := range replicas {
		if n := served[fmt.Sprintf("r%d", i)]; n < before/10 {
			t.Errorf("replica r%d served %d of the %d requests before the kill: load is not spread", i, n, before)
		}
	}
	if afterKill < 100 {
		t.Errorf("only %d requests succeeded after the kill", afterKill)
	}
	// A worker has one request at a time, so at most `workers` were in
	// flight on the killed replica; each failure must be one of those.
	if len(failed) > workers {
		t.Errorf("%d requests failed; at most %d were in flight", len(failed), workers)
	}
	for _, o := range failed {
		if !o.start.Before(deadAt) || o.end.Before(killAt) {
			t.Errorf("a request not in flight at the kill failed: status %d (%v), started %v after the kill (death %v after), ended %v after",
				o.status, o.err, o.start.Sub(killAt), deadAt.Sub(killAt), o.end.Sub(killAt))
		}
	}

	// Every replica's tokens work on every surviving replica, directly.
	for i := range replicas {
		name := fmt.Sprintf("r%d", i)
		if len(tokensBy[name]) == 0 {
			t.Errorf("no token issued by %s", name)
			continue
		}
		var tok, openid string
		fmt.Sscan(tokensBy[name][0], &tok, &openid)
		for j, r := range replicas {
			if r == killed {
				continue
			}
			c := postJSON(t, r.URL+"/v1/session/check", tok, nil)
			if c.Status != http.StatusOK {
				t.Errorf("token from %s on r%d: %d %s", name, j, c.Status, c.Body)
			}
		}
	}
}
