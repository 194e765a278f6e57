package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

//go:embed load.lua
var wrkScript []byte

// workload is what one route sends: a fresh js_code per login, or a cycle
// through one prepared request per user for bearer routes, or plain GETs.
type workload struct {
	Route  string
	Method string
	URL    string // full URL of the route
	// Login sends {"code": "<fresh>"} per request.
	Login bool
	// Pool holds, per user, its bearer credential and request body.
	Pool []pooled
}

// pooled is one user's prepared bearer request.
type pooled struct {
	Bearer string
	Body   []byte
}

// wrkSummary is the line load.lua's done() prints.
type wrkSummary struct {
	Requests   int64 `json:"requests"`
	DurationUS int64 `json:"duration_us"`
	Connect    int64 `json:"connect"`
	Read       int64 `json:"read"`
	Write      int64 `json:"write"`
	Status     int64 `json:"status"`
	Timeout    int64 `json:"timeout"`
}

// errors is every failed request wrk counted: socket errors, timeouts and
// answers with a status of 400 or more.
func (s wrkSummary) errors() int64 { return s.Connect + s.Read + s.Write + s.Status + s.Timeout }

// wrkRun is a finished closed-loop run and what wrk itself spent.
type wrkRun struct {
	Summary   wrkSummary
	Wall      time.Duration
	ClientCPU time.Duration
}

// runWrk drives w closed-loop with conns keep-alive connections for d
// (whole seconds: wrk's unit). wrk inherits the bench's CPU mask.
func runWrk(ctx context.Context, dir string, w workload, conns int, d time.Duration, nonce string) (wrkRun, error) {
	script := filepath.Join(dir, "load.lua")
	if err := os.WriteFile(script, wrkScript, 0o600); err != nil {
		return wrkRun{}, err
	}
	mode := "get"
	env := []string{"BENCH_PATH=" + pathOf(w.URL), "BENCH_NONCE=" + nonce}
	switch {
	case w.Login:
		mode = "login"
	case len(w.Pool) > 0:
		mode = "pool"
		data := filepath.Join(dir, "pool-"+w.Route+".tsv")
		var b bytes.Buffer
		for _, p := range w.Pool {
			fmt.Fprintf(&b, "%s\t%s\n", p.Bearer, p.Body)
		}
		if err := os.WriteFile(data, b.Bytes(), 0o600); err != nil {
			return wrkRun{}, err
		}
		env = append(env, "BENCH_DATA="+data)
	}
	env = append(env, "BENCH_MODE="+mode)
	secs := max(1, int(math.Ceil(d.Seconds())))
	cmd := exec.CommandContext(ctx, "wrk", "-t1", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(secs)+"s",
		"--timeout", "10s", "-s", script, baseOf(w.URL))
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return wrkRun{}, fmt.Errorf("wrk: %w: %s", err, strings.TrimSpace(errb.String()))
	}
	run := wrkRun{Wall: time.Since(start), ClientCPU: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
	sum, err := parseWrkOutput(out.String())
	if err != nil {
		return wrkRun{}, err
	}
	run.Summary = sum
	return run, nil
}

// parseWrkOutput finds the WRKJSON line load.lua prints.
func parseWrkOutput(out string) (wrkSummary, error) {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "WRKJSON "); ok {
			var s wrkSummary
			if err := json.Unmarshal([]byte(rest), &s); err != nil {
				return wrkSummary{}, fmt.Errorf("wrk summary: %w", err)
			}
			return s, nil
		}
	}
	return wrkSummary{}, errors.New("wrk printed no summary: " + strings.TrimSpace(out))
}

// openRun is a finished open-loop run: every latency, for exact quantiles.
type openRun struct {
	Rate      float64
	Requests  int64
	Errors    int64
	Latencies []time.Duration
	Wall      time.Duration
	// FirstError is one error message, to say what went wrong.
	FirstError string
}

// runVegeta sends w at a constant rate for d with vegeta, which starts a
// new worker whenever all are busy: a slow answer never delays the next
// request, so the latencies are free of coordinated omission: each runs
// from the moment the request was due (a worker is always free to take it)
// to the end of its answer.
func runVegeta(ctx context.Context, w workload, rate float64, d time.Duration, conns int, nonce string) openRun {
	var n atomic.Uint64
	hdr := http.Header{"Content-Type": {"application/json"}}
	bearerHdrs := make([]http.Header, len(w.Pool))
	for i, p := range w.Pool {
		bearerHdrs[i] = http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + p.Bearer}}
	}
	targeter := func(t *vegeta.Target) error {
		i := n.Add(1)
		t.Method, t.URL = w.Method, w.URL
		switch {
		case w.Login:
			t.Body = []byte(`{"code":"` + nonce + "-v-" + strconv.FormatUint(i, 10) + `"}`)
			t.Header = hdr
		case len(w.Pool) > 0:
			k := int(i % uint64(len(w.Pool)))
			t.Body, t.Header = w.Pool[k].Body, bearerHdrs[k]
		}
		return nil
	}
	// Connections are capped, as behind any proxy or client pool: a
	// request waiting for a free connection is still timed from when it
	// was due, so the wait shows in the latencies, and a slow moment
	// cannot turn into thousands of new connections and a listen-backlog
	// overflow that would measure the kernel, not the server.
	atk := vegeta.NewAttacker(vegeta.Workers(16), vegeta.KeepAlive(true), vegeta.Timeout(10*time.Second),
		vegeta.MaxConnections(conns), vegeta.Connections(conns), vegeta.MaxBody(64<<10), vegeta.Redirects(vegeta.NoFollow))
	pacer := vegeta.Rate{Freq: max(1, int(math.Round(rate))), Per: time.Second}
	run := openRun{Rate: float64(pacer.Freq)}
	start := time.Now()
	results := atk.Attack(targeter, pacer, d, w.Route)
	done := ctx.Done()
	for {
		select {
		case <-done:
			atk.Stop()
			done = nil
		case r, ok := <-results:
			if !ok {
				run.Wall = time.Since(start)
				return run
			}
			run.Requests++
			run.Latencies = append(run.Latencies, r.Latency)
			if r.Error != "" || r.Code != http.StatusOK {
				run.Errors++
				if run.FirstError == "" {
					run.FirstError = fmt.Sprintf("status %d %s", r.Code, r.Error)
				}
			}
		}
	}
}

// pathOf is the path of a full URL, for wrk's request lines.
func pathOf(u string) string {
	rest := strings.TrimPrefix(strings.TrimPrefix(u, "http://"), "https://")
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[i:]
	}
	return "/"
}

// baseOf is scheme and host of a full URL.
func baseOf(u string) string { return strings.TrimSuffix(u, pathOf(u)) }
