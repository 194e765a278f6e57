package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// world is what every contender shares: the emulator, Redis, the built
// wxtoken binary, the app's credentials, a scratch directory.
type world struct {
	o       *options
	tmp     string
	self    string
	wxtoken string
	appID   string
	secret  string
	emu     *proc
	emuURL  string
	redis   *proc
	redisAt string
	client  *http.Client
	log     io.Writer
}

// server is one running contender.
type server struct {
	name  string // floor, table, wxtoken-ES256, ...
	kind  string // floor, table or wxtoken
	proc  *proc
	base  string // http://addr
	admin string // side address for allocation counters; "" for wxtoken
	// metrics is wxtoken's Prometheus endpoint (WXTOKEN_METRICS_ADDR), whose
	// go_memstats_mallocs_total counts its allocations; "" for the others.
	metrics string
	aux     *proc // Redis, whose CPU the table's requests also cost
}

// orchestrate is a whole run: start the shared parts, measure each
// contender in turn (alone on the server CPU), report.
func orchestrate(ctx context.Context, o *options, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if o.Render != "" {
		return render(o, stdout)
	}
	if err := pinSelf(args, o.LoadCPU, getenv); err != nil {
		return err
	}
	for tool, pkg := range map[string]string{"redis-server": "redis-server", "wrk": "wrk", "taskset": "util-linux"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is missing; install it with: apt-get install -y %s", tool, pkg)
		}
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	out, chart := o.Out, o.Chart
	tmp, err := os.MkdirTemp("", "wxtoken-bench-")
	if err != nil {
		return err
	}
	if out == "" {
		out = filepath.Join(root, "bench", "results.json")
		if o.Smoke {
			out = filepath.Join(tmp, "results.json")
		}
	}
	if chart == "" {
		chart = filepath.Join(root, "bench", "throughput.svg")
		if o.Smoke {
			chart = filepath.Join(tmp, "throughput.svg")
		}
	}
	failed := true
	defer func() {
		if failed || o.Keep {
			fmt.Fprintln(stderr, "bench: logs kept in", tmp)
			return
		}
		os.RemoveAll(tmp)
	}()

	w, err := newWorld(ctx, o, root, tmp, stderr)
	if err != nil {
		return err
	}
	defer w.close()

	res := &Results{Started: time.Now().UTC(), Command: "go run ./bench " + strings.Join(args[1:], " "),
		Machine: machineInfo(), Settings: Settings{
			Smoke: o.Smoke, ClosedS: o.Closed.Seconds(), OpenS: o.Open.Seconds(), SoakS: o.Soak.Seconds(),
			Conns: o.Conns, Users: o.Users, OpenRate: o.OpenRateMul, ServerCPU: o.ServerCPU, LoadCPU: o.LoadCPU,
		}}
	res.Command = strings.TrimSpace(res.Command)
	soaked := false
	rounds := make([][]Row, max(o.Rounds, 1))
	for round := range rounds {
		for _, kind := range o.Contenders {
			algs := []string{""}
			if kind == "wxtoken" {
				algs = o.Algs
			}
			for _, alg := range algs {
				// The soak runs once, in the first round, on the floor, the
				// table and the first wxtoken variant (the default ES256):
				// the design under test.
				soak := round == 0 && o.Soak > 0 && (kind != "wxtoken" || !soaked)
				rows, s, err := w.measure(ctx, kind, alg, soak)
				if err != nil {
					return err
				}
				rounds[round] = append(rounds[round], rows...)
				if s != nil {
					res.Soaks = append(res.Soaks, *s)
					soaked = soaked || kind == "wxtoken"
				}
			}
		}
	}
	res.Rows = medianRows(rounds)
	res.Settings.Rounds = len(rounds)
	addRatios(res.Rows)
	res.Machine.LoadEnd = loadAvg()
	if o.Micro {
		fmt.Fprintln(stderr, "bench: go test -bench -benchmem (token, keys, wechat, raw primitives)")
		if res.Micro, err = runMicro(ctx, root, o.ServerCPU); err != nil {
			return err
		}
	}
	res.Notes = runNotes(o)

	if err := res.writeFile(out); err != nil {
		return err
	}
	if err := report(res, out, chart, stdout); err != nil {
		return err
	}
	if o.Smoke {
		if err := checkSmoke(res, out, chart); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "smoke: every contender and route answered right, no errors, both files written and read back (then removed)")
	}
	failed = false
	return nil
}

// report prints the table and writes the markdown (beside out, .md) and
// the chart.
func report(res *Results, out, chart string, stdout io.Writer) error {
	fmt.Fprintln(stdout)
	printTable(stdout, res)
	var svg bytes.Buffer
	if err := writeChart(&svg, res.Rows, "Max throughput per route, server on one core (go run ./bench)"); err != nil {
		return err
	}
	if err := os.WriteFile(chart, svg.Bytes(), 0o644); err != nil {
		return err
	}
	md := strings.TrimSuffix(out, filepath.Ext(out)) + ".md"
	var mdb bytes.Buffer
	if err := writeMarkdown(&mdb, res); err != nil {
		return err
	}
	if err := os.WriteFile(md, mdb.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nwrote %s, %s (the README's tables) and %s\n", out, md, chart)
	return nil
}

// render re-reads a results file and reports it again, next to it.
func render(o *options, stdout io.Writer) error {
	b, err := os.ReadFile(o.Render)
	if err != nil {
		return err
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("%s: %w", o.Render, err)
	}
	chart := o.Chart
	if chart == "" {
		chart = filepath.Join(filepath.Dir(o.Render), "throughput.svg")
	}
	return report(&res, o.Render, chart, stdout)
}

// runNotes are the reading aids printed under the table and kept in the JSON.
func runNotes(o *options) []string {
	return []string{
		fmt.Sprintf("max req/s: wrk closed loop, %d keep-alive connections, one thread on cpu%d; wrk CPU is its own use of that core", o.Conns, o.LoadCPU),
		fmt.Sprintf("p50/p99/p99.9: vegeta open loop at %.0f%% of the same contender's max over at most %d connections, exact nearest-rank quantiles; sent/s below at req/s means the load core fell behind", 100*o.OpenRateMul, o.OpenConns),
		fmt.Sprintf("CPU µs/req: server utime+stime from /proc/<pid>/stat over the closed loop, divided by requests; server alone on cpu%d, GOMAXPROCS=1", o.ServerCPU),
		"allocs/req: heap objects incl. tiny ones, from runtime/metrics (floor, table) or the same counters in wxtoken's go_memstats_mallocs_total (WXTOKEN_METRICS_ADDR)",
		"×floor, ×table: wxtoken max req/s over the floor's and the table's on the same route (above 1 is faster)",
		"table CPU÷: the table's CPU per request, Redis's included, over wxtoken's (above 1, wxtoken costs less per request)",
	}
}

// checkSmoke fails the smoke run on any error or a missing file.
func checkSmoke(res *Results, out, chart string) error {
	if n := res.totalErrors(); n > 0 {
		var first string
		for _, r := range res.Rows {
			if r.FirstError != "" && first == "" {
				first = r.Contender + " " + r.Route + ": " + r.FirstError
			}
		}
		for _, s := range res.Soaks {
			if s.FirstError != "" && first == "" {
				first = s.Contender + " soak: " + s.FirstError
			}
		}
		return fmt.Errorf("smoke: %d failed requests (%s)", n, first)
	}
	for _, r := range res.Rows {
		if !r.NA && (r.ClosedRequests == 0 || r.OpenRequests == 0) {
			return fmt.Errorf("smoke: %s %s sent no requests", r.Contender, r.Route)
		}
	}
	var back Results
	b, err := os.ReadFile(out)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &back); err != nil || len(back.Rows) != len(res.Rows) {
		return fmt.Errorf("smoke: %s does not hold the results: %v", out, err)
	}
	svg, err := os.ReadFile(chart)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(svg, []byte("<svg")) {
		return fmt.Errorf("smoke: %s is not an SVG", chart)
	}
	return nil
}

// newWorld builds wxtoken and starts the emulator and Redis on the load CPU.
func newWorld(ctx context.Context, o *options, root, tmp string, log io.Writer) (*world, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	w := &world{o: o, tmp: tmp, self: self, appID: "wx" + randomHex(8), secret: randomHex(16), log: log,
		client: &http.Client{Timeout: 10 * time.Second}}
	w.wxtoken = filepath.Join(tmp, "wxtoken")
	fmt.Fprintln(log, "bench: building wxtoken")
	build := exec.CommandContext(ctx, "go", "build", "-o", w.wxtoken, ".")
	build.Dir = root
	if b, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %w: %s", err, b)
	}

	emuAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	w.emu, err = startPinned("emulator", o.LoadCPU, []string{self, "-role", roleEmulator, "-addr", emuAddr, "-appid", w.appID},
		[]string{envSecret + "=" + w.secret}, tmp)
	if err != nil {
		return nil, err
	}
	w.emuURL = "http://" + emuAddr
	if err := waitReady(ctx, w.emu, tcpOpen(emuAddr)); err != nil {
		w.close()
		return nil, err
	}

	w.redisAt, err = freeAddr()
	if err != nil {
		w.close()
		return nil, err
	}
	_, port, _ := strings.Cut(w.redisAt, ":")
	w.redis, err = startPinned("redis", o.LoadCPU, []string{"redis-server", "--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", tmp, "--protected-mode", "yes"}, nil, tmp)
	if err != nil {
		w.close()
		return nil, err
	}
	if err := waitReady(ctx, w.redis, tcpOpen(w.redisAt)); err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

func (w *world) close() {
	for _, p := range []*proc{w.emu, w.redis} {
		if p != nil {
			p.stop()
		}
	}
}

// measure starts one contender, prepares its users, measures each route
// and the soak, and stops it.
func (w *world) measure(ctx context.Context, kind, alg string, soak bool) ([]Row, *Soak, error) {
	srv, err := w.start(ctx, kind, alg)
	if err != nil {
		return nil, nil, err
	}
	defer srv.proc.stop()
	fmt.Fprintf(w.log, "bench: %s: preparing %d users\n", srv.name, w.o.Users)
	users, err := w.users(ctx, srv)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", srv.name, err)
	}
	loads, err := w.workloads(srv, users)
	if err != nil {
		return nil, nil, err
	}
	var rows []Row
	maxOf := map[string]float64{}
	for _, route := range allRoutes {
		wl, ok := loads[route]
		if !ok {
			rows = append(rows, Row{Contender: srv.name, Route: route, NA: true})
			continue
		}
		if err := w.check(ctx, wl, users[0]); err != nil {
			return nil, nil, fmt.Errorf("%s %s: %w", srv.name, route, err)
		}
		fmt.Fprintf(w.log, "bench: %s %s: closed loop %v, open loop %v\n", srv.name, route, w.o.Closed, w.o.Open)
		row, err := w.measureRoute(ctx, srv, wl)
		if err != nil {
			return nil, nil, fmt.Errorf("%s %s: %w", srv.name, route, err)
		}
		maxOf[route] = row.MaxRPS
		rows = append(rows, row)
	}
	if !soak {
		return rows, nil, nil
	}
	wl, ok := loads[w.o.SoakRoute]
	if !ok {
		return rows, nil, nil
	}
	s, err := w.soak(ctx, srv, wl, maxOf[w.o.SoakRoute]*w.o.OpenRateMul)
	if err != nil {
		return nil, nil, fmt.Errorf("%s soak: %w", srv.name, err)
	}
	return rows, s, nil
}

// start runs a contender alone on the server CPU with GOMAXPROCS=1.
func (w *world) start(ctx context.Context, kind, alg string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	pinEnv := []string{"GOMAXPROCS=1"}
	srv := &server{kind: kind, base: "http://" + addr}
	switch kind {
	case roleFloor, roleTable:
		srv.name = kind
		admin, err := freeAddr()
		if err != nil {
			return nil, err
		}
		srv.admin = "http://" + admin
		argv := []string{w.self, "-role", kind, "-addr", addr, "-admin", admin, "-upstream", w.emuURL, "-appid", w.appID}
		if kind == roleTable {
			argv = append(argv, "-redis", w.redisAt)
			srv.aux = w.redis
		}
		srv.proc, err = startPinned(kind, w.o.ServerCPU, argv, append(pinEnv, envSecret+"="+w.secret), w.tmp)
		if err != nil {
			return nil, err
		}
	default:
		srv.name = "wxtoken-" + alg
		keysDir := filepath.Join(w.tmp, "keys-"+alg)
		env := append(pinEnv,
			"WXTOKEN_ADDR="+addr, "WXTOKEN_ISSUER="+srv.base, "WXTOKEN_KEYS_DIR="+keysDir,
			"WECHAT_APPID="+w.appID, "WECHAT_SECRET="+w.secret, "WECHAT_API_BASE="+w.emuURL,
			// Far above any rate here: the limiters stay in the path (their
			// cost is part of wxtoken's), but never refuse a request.
			"WXTOKEN_LOGIN_RATE=1000000000", "WXTOKEN_LOGIN_BURST=1000000000",
			"WXTOKEN_USER_RATE=1000000000", "WXTOKEN_USER_BURST=1000000000",
			// The floor and the table queue for WeChat without a cap; with
			// the emulator sharing a core with the load, wxtoken's cap of 64
			// logins in flight would shed load (503) that they would queue.
			"WXTOKEN_UPSTREAM_CONCURRENCY=4096",
		)
		metricsAddr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		srv.metrics = "http://" + metricsAddr + "/metrics"
		env = append(env, "WXTOKEN_METRICS_ADDR="+metricsAddr)
		initKeys := exec.CommandContext(ctx, w.wxtoken, "keys", "init", "--alg", alg)
		initKeys.Env = append(os.Environ(), "WXTOKEN_KEYS_DIR="+keysDir)
		if b, err := initKeys.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("wxtoken keys init --alg %s: %w: %s", alg, err, b)
		}
		srv.proc, err = startPinned(srv.name, w.o.ServerCPU, []string{w.wxtoken, "serve"}, env, w.tmp)
		if err != nil {
			return nil, err
		}
	}
	if err := waitReady(ctx, srv.proc, httpOK(srv.base+"/healthz")); err != nil {
		srv.proc.stop()
		return nil, err
	}
	return srv, nil
}

// benchUser is one user of the bearer routes: its credential for this
// contender and the session_key WeChat gave it.
type benchUser struct {
	Bearer     string
	OpenID     string
	SessionKey string
}

// users makes the contender's users. The table and wxtoken get theirs by
// real logins (and the emulator tells the session_key, which WeChat gave
// the server); the floor, which keeps nothing, is handed its users.
func (w *world) users(ctx context.Context, srv *server) ([]benchUser, error) {
	users := make([]benchUser, w.o.Users)
	if srv.kind == roleFloor {
		reg := make([]registeredUser, len(users))
		for i := range users {
			users[i] = benchUser{Bearer: randomHex(16), OpenID: "o" + randomHex(13), SessionKey: newSessionKey()}
			reg[i] = registeredUser{ID: users[i].Bearer, session: session{OpenID: users[i].OpenID, SessionKey: users[i].SessionKey}}
		}
		body, _ := json.Marshal(reg)
		if _, err := w.do(ctx, http.MethodPost, srv.admin+"/users", "", body, http.StatusNoContent); err != nil {
			return nil, err
		}
		return users, nil
	}
	nonce := randomHex(6)
	for i := range users {
		body := []byte(`{"code":"setup-` + nonce + "-" + strconv.Itoa(i) + `"}`)
		b, err := w.do(ctx, http.MethodPost, srv.base+"/v1/login", "", body, http.StatusOK)
		if err != nil {
			return nil, fmt.Errorf("login: %w", err)
		}
		var ans struct {
			AccessToken string `json:"access_token"`
			OpenID      string `json:"openid"`
		}
		if err := json.Unmarshal(b, &ans); err != nil || ans.AccessToken == "" || ans.OpenID == "" {
			return nil, fmt.Errorf("login answered %q", b)
		}
		sk, err := w.do(ctx, http.MethodGet, w.emuURL+sessionKeyPath+"?appid="+w.appID+"&openid="+ans.OpenID, "", nil, http.StatusOK)
		if err != nil {
			return nil, fmt.Errorf("session key: %w", err)
		}
		users[i] = benchUser{Bearer: ans.AccessToken, OpenID: ans.OpenID, SessionKey: string(sk)}
	}
	return users, nil
}

// workloads are the contender's routes with their requests.
func (w *world) workloads(srv *server, users []benchUser) (map[string]workload, error) {
	dec := make([]pooled, len(users))
	info := make([]pooled, len(users))
	for i, u := range users {
		d, inf, err := userDataBodies(w.appID, u)
		if err != nil {
			return nil, err
		}
		dec[i] = pooled{Bearer: u.Bearer, Body: d}
		info[i] = pooled{Bearer: u.Bearer, Body: inf}
	}
	m := map[string]workload{
		routeLogin:    {Route: routeLogin, Method: http.MethodPost, URL: srv.base + "/v1/login", Login: true},
		routeDecrypt:  {Route: routeDecrypt, Method: http.MethodPost, URL: srv.base + "/v1/decrypt", Pool: dec},
		routeUserinfo: {Route: routeUserinfo, Method: http.MethodPost, URL: srv.base + "/v1/userinfo", Pool: info},
	}
	if srv.kind == "wxtoken" {
		m[routeJWKS] = workload{Route: routeJWKS, Method: http.MethodGet, URL: srv.base + "/.well-known/jwks.json"}
	}
	return m, nil
}

// check sends one request of wl and checks the answer is right, not just
// 200: numbers of a contender that answers wrongly mean nothing.
func (w *world) check(ctx context.Context, wl workload, u benchUser) error {
	switch {
	case wl.Login:
		b, err := w.do(ctx, http.MethodPost, wl.URL, "", []byte(`{"code":"check-`+randomHex(6)+`"}`), http.StatusOK)
		if err != nil {
			return err
		}
		if !bytes.Contains(b, []byte(`"access_token":"`)) {
			return fmt.Errorf("login answered %q", b)
		}
	case len(wl.Pool) > 0:
		b, err := w.do(ctx, wl.Method, wl.URL, wl.Pool[0].Bearer, wl.Pool[0].Body, http.StatusOK)
		if err != nil {
			return err
		}
		if !bytes.Contains(b, []byte(`"openId":"`+u.OpenID+`"`)) {
			return fmt.Errorf("%s answered %q, not the user's data", wl.Route, b)
		}
	default:
		b, err := w.do(ctx, wl.Method, wl.URL, "", nil, http.StatusOK)
		if err != nil {
			return err
		}
		if !bytes.Contains(b, []byte(`"keys"`)) {
			return fmt.Errorf("jwks answered %q", b)
		}
	}
	return nil
}

// measureRoute runs the closed loop (with warm-up) and the open loop at a
// fraction of the maximum just found.
func (w *world) measureRoute(ctx context.Context, srv *server, wl workload) (Row, error) {
	if w.o.Warmup >= time.Second {
		if _, err := runWrk(ctx, w.tmp, wl, w.o.Conns, w.o.Warmup, "warm-"+randomHex(6)); err != nil {
			return Row{}, err
		}
	}
	allocs0, err := w.allocs(ctx, srv)
	if err != nil {
		return Row{}, err
	}
	cpu0, aux0, err := srv.cpu()
	if err != nil {
		return Row{}, err
	}
	wr, err := runWrk(ctx, w.tmp, wl, w.o.Conns, w.o.Closed, "max-"+randomHex(6))
	if err != nil {
		return Row{}, err
	}
	cpu1, aux1, err := srv.cpu()
	if err != nil {
		return Row{}, err
	}
	allocs1, err := w.allocs(ctx, srv)
	if err != nil {
		return Row{}, err
	}
	var auxCPU *time.Duration
	if srv.aux != nil {
		d := aux1 - aux0
		auxCPU = &d
	}
	var allocs *uint64
	if allocs0 != nil && allocs1 != nil {
		d := *allocs1 - *allocs0
		allocs = &d
	}
	row := closedRow(srv.name, wl.Route, wr, cpu1-cpu0, auxCPU, allocs)

	cpu0, _, err = srv.cpu()
	if err != nil {
		return Row{}, err
	}
	open := runVegeta(ctx, wl, row.MaxRPS*w.o.OpenRateMul, w.o.Open, w.o.OpenConns, "open-"+randomHex(6))
	cpu1, _, err = srv.cpu()
	if err != nil {
		return Row{}, err
	}
	row.addOpen(open, cpu1-cpu0)
	return row, ctx.Err()
}

// soak runs wl at rate for the soak duration and reads the server's RSS
// at the start, every second (for the peak) and at the end.
func (w *world) soak(ctx context.Context, srv *server, wl workload, rate float64) (*Soak, error) {
	fmt.Fprintf(w.log, "bench: %s soak: %s at %.0f req/s for %v\n", srv.name, wl.Route, rate, w.o.Soak)
	start, err := rssBytes(srv.proc.pid())
	if err != nil {
		return nil, err
	}
	peak := start
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if v, err := rssBytes(srv.proc.pid()); err == nil {
					peak = max(peak, v)
				}
			}
		}
	}()
	open := runVegeta(ctx, wl, rate, w.o.Soak, w.o.OpenConns, "soak-"+randomHex(6))
	close(stop)
	<-sampled
	end, err := rssBytes(srv.proc.pid())
	if err != nil {
		return nil, err
	}
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	return &Soak{Contender: srv.name, Route: wl.Route, Rate: open.Rate, Seconds: open.Wall.Seconds(),
		Requests: open.Requests, Errors: open.Errors, FirstError: open.FirstError,
		RSSStartMB: mib(start), RSSEndMB: mib(end), RSSPeakMB: mib(max(peak, end))}, ctx.Err()
}

// cpu reads the server's and, for the table, Redis's CPU time so far.
func (s *server) cpu() (own, aux time.Duration, err error) {
	own, err = cpuTime(s.proc.pid())
	if err != nil || s.aux == nil {
		return own, 0, err
	}
	aux, err = cpuTime(s.aux.pid())
	return own, aux, err
}

// allocs reads a server's cumulative allocation count (heap objects,
// tiny ones included): a floor's or table's from its side server, wxtoken's
// from its Prometheus endpoint (the Go collector's go_memstats_mallocs_total,
// the same two runtime/metrics counters).
func (w *world) allocs(ctx context.Context, srv *server) (*uint64, error) {
	if srv.metrics != "" {
		b, err := w.do(ctx, http.MethodGet, srv.metrics, "", nil, http.StatusOK)
		if err != nil {
			return nil, err
		}
		n, err := promCounter(b, "go_memstats_mallocs_total")
		if err != nil {
			return nil, err
		}
		return &n, nil
	}
	if srv.admin == "" {
		return nil, nil
	}
	b, err := w.do(ctx, http.MethodGet, srv.admin+"/metrics", "", nil, http.StatusOK)
	if err != nil {
		return nil, err
	}
	var c allocCounters
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	return &c.Objects, nil
}

// promCounter reads an unlabelled sample of the Prometheus text exposition.
func promCounter(exposition []byte, name string) (uint64, error) {
	for line := range strings.SplitSeq(string(exposition), "\n") {
		value, ok := strings.CutPrefix(line, name+" ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		return uint64(f), nil
	}
	return 0, fmt.Errorf("%s: not in the exposition", name)
}

// do sends one request and wants status; it answers the body.
func (w *world) do(ctx context.Context, method, url, bearer string, body []byte, status int) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != status {
		return nil, fmt.Errorf("%s %s: %s: %s", method, pathOf(url), resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}

// moduleRoot is the directory of the go.mod that holds this bench.
func moduleRoot(ctx context.Context) (string, error) {
	b, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(b))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run the bench from the wxtoken module: go run ./bench")
	}
	return filepath.Dir(mod), nil
}

// machineInfo describes the machine for the report.
func machineInfo() Machine {
	m := Machine{Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ":")
			switch strings.TrimSpace(k) {
			case "model name":
				m.CPU = strings.TrimSpace(v)
			case "processor":
				m.Cores++
			}
		}
	}
	m.LoadStart = loadAvg()
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := exec.Command("redis-server", "--version").Output(); err == nil {
		m.Redis = strings.TrimSpace(string(b))
	}
	// wrk -v prints its version, then its usage, and exits 1.
	b, _ := exec.Command("wrk", "-v").CombinedOutput()
	m.Wrk, _, _ = strings.Cut(strings.TrimSpace(string(b)), "\n")
	return m
}

// loadAvg is the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
