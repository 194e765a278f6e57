package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// Roles the bench binary plays when the orchestrator starts it as a child.
const (
	roleEmulator = "emulator"
	roleFloor    = "floor"
	roleTable    = "table"
)

// errUsage marks a command-line mistake whose message is already printed;
// errHelp a -h, whose help is printed and which is no failure.
var (
	errUsage = errors.New("usage error")
	errHelp  = errors.New("help requested")
)

// options is the command line. The orchestrator's flags set the run; the
// child flags (-role and below) are how it starts its own servers.
type options struct {
	Smoke       bool
	Closed      time.Duration
	Open        time.Duration
	Soak        time.Duration
	Warmup      time.Duration
	Conns       int
	OpenConns   int
	Users       int
	Algs        []string
	ServerCPU   int
	LoadCPU     int
	Out         string
	Chart       string
	SoakRoute   string
	Contenders  []string
	OpenRateMul float64
	// Render re-renders the table, markdown and chart of a results file
	// without measuring.
	Render string
	// Keep keeps the scratch directory (every server's log) after a run.
	Keep bool
	// Micro runs go test -bench for wxtoken's calls and their primitives.
	Micro bool
	// Rounds repeats every contender's measurements, in turn, and keeps
	// each route's median: contenders are measured minutes apart, and a
	// shared machine drifts over minutes as much as the gaps measured.
	Rounds int

	// Child flags.
	Role     string
	Addr     string
	Admin    string
	Upstream string
	Redis    string
	AppID    string
}

// parseOptions reads the flags; -smoke shortens every phase and keeps its
// files out of the committed ones unless -out/-chart say otherwise.
func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var algs, contenders string
	fs.BoolVar(&o.Smoke, "smoke", false, "seconds: every contender and route briefly (wxtoken ES256 only), fail on any error, files written to a temp dir")
	fs.DurationVar(&o.Closed, "closed", 8*time.Second, "closed-loop (max throughput) duration per route and contender")
	fs.DurationVar(&o.Open, "open", 8*time.Second, "open-loop (fixed rate) duration per route and contender")
	fs.DurationVar(&o.Soak, "soak", 60*time.Second, "soak at a fixed rate per contender, RSS read at start and end; 0 skips it")
	fs.DurationVar(&o.Warmup, "warmup", time.Second, "closed-loop warm-up before each measured run, not counted")
	fs.IntVar(&o.Conns, "c", 32, "connections of the closed loop (wrk -c)")
	fs.IntVar(&o.OpenConns, "open-c", 64, "connections the open loop may use at most (vegeta); requests waiting for one count in the latency")
	fs.IntVar(&o.Users, "users", 256, "distinct users (tokens / 3rd_sessions) the bearer routes cycle through")
	fs.StringVar(&algs, "algs", "ES256,EdDSA,RS256", "wxtoken signing algorithms to measure, one wxtoken contender each (keys init --alg)")
	fs.StringVar(&contenders, "contenders", "floor,table,wxtoken", "which contenders to run")
	fs.IntVar(&o.ServerCPU, "server-cpu", 0, "CPU the server under test is pinned to (taskset), GOMAXPROCS=1")
	fs.IntVar(&o.LoadCPU, "load-cpu", 1, "CPU of the bench, load generators, emulator and Redis")
	fs.StringVar(&o.Out, "out", "", "results JSON (default bench/results.json; a temp dir with -smoke)")
	fs.StringVar(&o.Chart, "chart", "", "throughput chart SVG (default bench/throughput.svg; a temp dir with -smoke)")
	fs.StringVar(&o.SoakRoute, "soak-route", routeLogin, "route of the soak: login makes new state on every request")
	fs.BoolVar(&o.Micro, "micro", true, "also run go test -bench -benchmem: issue, verify, seal/open, user-data decrypt, each beside its raw primitive (off with -smoke)")
	fs.IntVar(&o.Rounds, "rounds", 1, "measure every contender this many times, in turn (floor, table, wxtoken, floor, ...), and keep each route's median by CPU per request")
	fs.BoolVar(&o.Keep, "keep", false, "keep the scratch directory with every server's log (kept anyway after a failure)")
	fs.StringVar(&o.Render, "render", "", "re-render the table, the markdown and the chart of this results JSON; measures nothing")
	fs.Float64Var(&o.OpenRateMul, "open-rate", 0.5, "open-loop rate as a fraction of the contender's measured maximum")

	fs.StringVar(&o.Role, "role", "", "internal: run as the emulator, floor or table server")
	fs.StringVar(&o.Addr, "addr", "", "internal: listen address of a role")
	fs.StringVar(&o.Admin, "admin", "", "internal: side address for the orchestrator (metrics, users)")
	fs.StringVar(&o.Upstream, "upstream", "", "internal: WeChat API base of floor and table")
	fs.StringVar(&o.Redis, "redis", "", "internal: Redis address of the table")
	fs.StringVar(&o.AppID, "appid", "", "internal: the mini program's appid")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, errHelp
		}
		return nil, errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected argument %q\n", fs.Arg(0))
		return nil, errUsage
	}
	if o.Smoke {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		short := map[string]*time.Duration{"closed": &o.Closed, "open": &o.Open, "soak": &o.Soak, "warmup": &o.Warmup}
		vals := map[string]time.Duration{"closed": time.Second, "open": 500 * time.Millisecond,
			"soak": time.Second, "warmup": 0}
		for name, p := range short {
			if !set[name] {
				*p = vals[name]
			}
		}
		if !set["users"] {
			o.Users = 8
		}
		if !set["c"] {
			o.Conns = 8
		}
		// A smoke run checks that things work, not how fast: one wxtoken
		// variant (the tests cover keys init --alg) and an open loop far
		// below the maximum, so a busy machine cannot fail it.
		if !set["algs"] {
			algs = "ES256"
		}
		if !set["micro"] {
			o.Micro = false
		}
		if !set["open-rate"] {
			o.OpenRateMul = 0.2
		}
	}
	o.Algs = splitList(algs)
	o.Contenders = splitList(contenders)
	switch {
	case o.Role != "":
		return o, nil
	case o.Conns < 1 || o.OpenConns < 1 || o.Users < 1:
		fmt.Fprintln(stderr, "-c, -open-c and -users must be at least 1")
		return nil, errUsage
	case o.Closed <= 0 || o.Open <= 0 || o.Soak < 0 || o.Warmup < 0:
		fmt.Fprintln(stderr, "-closed and -open must be positive, -soak and -warmup not negative")
		return nil, errUsage
	case o.OpenRateMul <= 0 || o.OpenRateMul > 1:
		fmt.Fprintln(stderr, "-open-rate must be in (0, 1]")
		return nil, errUsage
	case o.ServerCPU == o.LoadCPU:
		fmt.Fprintln(stderr, "-server-cpu and -load-cpu must differ")
		return nil, errUsage
	}
	for _, c := range o.Contenders {
		if c != roleFloor && c != roleTable && c != "wxtoken" {
			fmt.Fprintf(stderr, "unknown contender %q (floor, table, wxtoken)\n", c)
			return nil, errUsage
		}
	}
	for _, a := range o.Algs {
		if a != "ES256" && a != "EdDSA" && a != "RS256" {
			fmt.Fprintf(stderr, "unknown alg %q (ES256, EdDSA, RS256)\n", a)
			return nil, errUsage
		}
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
