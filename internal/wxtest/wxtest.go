// Package wxtest holds what the tests of several packages share: the
// WeChat emulator on loopback, requests that read a whole answer, the
// problem+json check, polling, raw connections for timeout tests, and
// WeChat's published test vectors.
//
// It exists so that the root package's end-to-end tests (wxtoken run
// whole, in process or as a process) and the handlers', server's and
// wechat's tests use one copy of these helpers instead of one each. Only
// _test.go files import it; it imports no package of ours but the emulator,
// so any package's tests, internal ones included, may use it.
package wxtest

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/emulator"
)

// ProblemTypePrefix starts every problem type wxtoken answers; the slug
// after it is the stable part clients branch on.
const ProblemTypePrefix = "urn:wxtoken:problem:"

// MustEmulator starts the WeChat emulator on loopback, answering for apps
// (appid to appsecret) with unionids, and closes it when the test ends. It
// returns the emulator, to set faults and read call counts, and its base
// URL, for WECHAT_API_BASE or a wechat.Client.
func MustEmulator(tb testing.TB, apps map[string]string) (*emulator.Emulator, string) {
	tb.Helper()
	emu := emulator.New(emulator.Config{Apps: apps, UnionID: true})
	srv := httptest.NewServer(emu)
	tb.Cleanup(srv.Close)
	return emu, srv.URL
}

// Answer is one HTTP exchange, read whole.
type Answer struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body as a JSON object or fails the test.
func (a Answer) JSON(tb testing.TB) map[string]any {
	tb.Helper()
	var m map[string]any
	if err := json.Unmarshal(a.Body, &m); err != nil {
		tb.Fatalf("answer is not a JSON object: %v: %s", err, a.Body)
	}
	return m
}

// Send makes one request with these headers and reads the whole answer.
func Send(tb testing.TB, method, url string, body io.Reader, header map[string]string) Answer {
	tb.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return Answer{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// Do sends body with a Content-Type and a bearer token, each left out when
// empty.
func Do(tb testing.TB, method, url, bearer, contentType string, body []byte) Answer {
	tb.Helper()
	header := map[string]string{}
	if contentType != "" {
		header["Content-Type"] = contentType
	}
	if bearer != "" {
		header["Authorization"] = "Bearer " + bearer
	}
	return Send(tb, method, url, bytes.NewReader(body), header)
}

// PostJSON posts v as JSON, with a bearer token unless it is empty.
func PostJSON(tb testing.TB, url, bearer string, v any) Answer {
	tb.Helper()
	return Do(tb, http.MethodPost, url, bearer, "application/json", MustJSON(tb, v))
}

// MustJSON marshals v or fails the test.
func MustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// Login logs in at base with code, for appid unless it is empty (the
// default app), and returns the access token and the whole answer.
func Login(tb testing.TB, base, appid, code string) (string, map[string]any) {
	tb.Helper()
	body := map[string]string{"code": code}
	if appid != "" {
		body["appid"] = appid
	}
	a := PostJSON(tb, base+"/v1/login", "", body)
	if a.Status != http.StatusOK {
		tb.Fatalf("login %q: %d %s", code, a.Status, a.Body)
	}
	m := a.JSON(tb)
	tok, _ := m["access_token"].(string)
	if tok == "" {
		tb.Fatalf("login answer has no access_token: %s", a.Body)
	}
	return tok, m
}

// WantProblem checks that a is an RFC 9457 problem+json with this status,
// a title and a detail, and the stable type of slug (any type when slug is
// empty). It returns the problem.
func WantProblem(tb testing.TB, a Answer, status int, slug string) map[string]any {
	tb.Helper()
	if a.Status != status {
		tb.Fatalf("status = %d, want %d: %s", a.Status, status, a.Body)
	}
	if ct := a.Header.Get("Content-Type"); ct != "application/problem+json" {
		tb.Fatalf("Content-Type = %q, want application/problem+json: %s", ct, a.Body)
	}
	p := a.JSON(tb)
	for _, f := range []string{"type", "title", "detail"} {
		if s, _ := p[f].(string); s == "" {
			tb.Errorf("problem has no %q: %s", f, a.Body)
		}
	}
	if st, _ := p["status"].(float64); int(st) != status {
		tb.Errorf("problem status = %v, want %d", p["status"], status)
	}
	if slug != "" && p["type"] != ProblemTypePrefix+slug {
		tb.Errorf("problem type = %v, want %s%s", p["type"], ProblemTypePrefix, slug)
	}
	return p
}

// Eventually polls cond every 20 ms until it holds, and fails the test if
// it does not within the given time.
func Eventually(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("not within %v: %s", within, what)
		}
	}
}

// Signature is WeChat's signature of rawData under a session_key: the hex
// SHA-1 of the two concatenated.
func Signature(rawData, sessionKey string) string {
	sum := sha1.Sum([]byte(rawData + sessionKey))
	return hex.EncodeToString(sum[:])
}

// RawConn opens a TCP connection to hostPort and writes raw on it, for
// tests that send HTTP no well-behaved client would. The connection is
// closed when the test ends.
func RawConn(tb testing.TB, hostPort, raw string) net.Conn {
	tb.Helper()
	conn, err := net.Dial("tcp", hostPort)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, raw); err != nil {
		tb.Fatal(err)
	}
	return conn
}

// KeepAlive opens a connection to hostPort, makes one GET of path on it and
// reads the answer, leaving the connection open and idle. The answer is
// nil when the server closed the connection instead of answering.
func KeepAlive(tb testing.TB, hostPort, path string) (net.Conn, *http.Response) {
	tb.Helper()
	conn := RawConn(tb, hostPort, "GET "+path+" HTTP/1.1\r\nHost: wxtoken.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return conn, nil
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return conn, resp
}

// HeldOpen reads conn until the server closes it and says how long that
// took; with trickle it keeps sending a byte every 200 ms meanwhile. A
// server that never closes fails the test after 10 s.
func HeldOpen(tb testing.TB, conn net.Conn, trickle bool) time.Duration {
	tb.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := io.ReadAll(conn)
		done <- err
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			held := time.Since(start)
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				tb.Fatalf("the server still held the connection after %v: no timeout cut it", held)
			}
			return held
		case <-tick.C:
			if trickle {
				_, _ = conn.Write([]byte(" "))
			}
		}
	}
}

// UserInfo is user data as WeChat writes it for the user of a login answer
// in appID: openId first, then fields, the unionId when the user has one,
// and appID's watermark.
func UserInfo(appID string, login map[string]any, fields string) []byte {
	openid, _ := login["openid"].(string)
	s := `{"openId":"` + openid + `",` + fields
	if u, _ := login["unionid"].(string); u != "" {
		s += `,"unionId":"` + u + `"`
	}
	return []byte(s + `,"watermark":{"appid":"` + appID + `","timestamp":1}}`)
}

// ParallelWaiting lets up to n parallel tests run at once, unless the
// command line set -parallel, whose default (GOMAXPROCS) suits tests that
// keep a CPU busy, or asked for fuzzing, where -parallel counts fuzzing
// processes. It is for packages whose parallel tests mostly wait, on
// timers, on a hanging emulator or on other processes. Call it from
// TestMain, before m.Run.
func ParallelWaiting(n int) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) {
		set = set || f.Name == "test.parallel" || (f.Name == "test.fuzz" && f.Value.String() != "")
	})
	if set {
		return
	}
	if err := flag.Set("test.parallel", strconv.Itoa(n)); err != nil {
		panic(fmt.Sprintf("wxtest: set -test.parallel: %v", err))
	}
}
