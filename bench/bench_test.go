package main

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 0.99, 0},
		{"one value is every quantile", ms(7), 0.999, 7 * time.Millisecond},
		{"median of four is the second (nearest rank)", ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"p99 of 1..100 is 99", hundred, 0.99, 99 * time.Millisecond},
		{"p99.9 of 1..100 is the max", hundred, 0.999, 100 * time.Millisecond},
		{"p0 is the min", hundred, 0, time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := quantile(tc.sorted, tc.q); got != tc.want {
				t.Fatalf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    time.Duration
		wantErr bool
	}{
		// utime 250 ticks, stime 50 ticks: 3 s at USER_HZ 100.
		{"plain", "1234 (wxtoken) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0", 3 * time.Second, false},
		{"name with spaces and parens", "99 (a (b) c) R 1 99 99 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 5 0", 100 * time.Millisecond, false},
		{"truncated", "99 (x) R 1 2 3", 0, true},
		{"no name", "garbage", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU(tc.stat)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %v, %v; want %v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseWrkOutput(t *testing.T) {
	out := "Running 1s test @ http://127.0.0.1:1\n  1 threads and 8 connections\n" +
		`WRKJSON {"requests":1200,"duration_us":1000500,"connect":0,"read":1,"write":0,"status":2,"timeout":3}` + "\n"
	s, err := parseWrkOutput(out)
	if err != nil {
		t.Fatal(err)
	}
	if s.Requests != 1200 || s.DurationUS != 1000500 || s.errors() != 6 {
		t.Fatalf("parsed %+v, errors %d", s, s.errors())
	}
	if _, err := parseWrkOutput("no summary here"); err == nil {
		t.Fatal("output without the summary line parsed")
	}
}

func TestClosedRowAndRatios(t *testing.T) {
	run := func(req int64) wrkRun {
		return wrkRun{Summary: wrkSummary{Requests: req, DurationUS: 2_000_000}, Wall: 2 * time.Second, ClientCPU: time.Second}
	}
	allocs := uint64(5000)
	floor := closedRow(roleFloor, routeDecrypt, run(20000), 2*time.Second, nil, &allocs)
	if floor.MaxRPS != 10000 || floor.CPUus != 100 || *floor.Allocs != 0.25 || floor.ClientCPU != 0.5 {
		t.Fatalf("floor row %+v", floor)
	}
	redis := 400 * time.Millisecond
	table := closedRow(roleTable, routeDecrypt, run(10000), 2*time.Second, &redis, nil)
	if *table.AuxCPUus != 40 || table.Allocs != nil {
		t.Fatalf("table row %+v", table)
	}
	wx := closedRow("wxtoken-ES256", routeDecrypt, run(5000), 2*time.Second, nil, nil)
	floor.P99ms, table.P99ms, wx.P99ms = 1, 2, 4
	rows := []Row{floor, table, wx, {Contender: roleFloor, Route: routeJWKS, NA: true}, closedRow("wxtoken-ES256", routeJWKS, run(100), 0, nil, nil)}
	addRatios(rows)
	got := rows[2]
	if got.VsFloor == nil || got.VsFloor.Throughput != 0.25 || got.VsFloor.P99 != 4 || got.VsFloor.CPU != 4 {
		t.Fatalf("vs floor %+v", got.VsFloor)
	}
	// The table costs 200 µs in its server and 40 in Redis a request,
	// wxtoken 400: wxtoken is 0.6× as cheap.
	if got.VsTable == nil || got.VsTable.Throughput != 0.5 || got.VsTable.P99 != 2 || got.VsTable.Cheaper != 0.6 {
		t.Fatalf("vs table %+v", got.VsTable)
	}
	if rows[0].VsFloor != nil || rows[4].VsFloor != nil {
		t.Fatal("ratios on a row without a comparison")
	}
}

func TestAddOpenAchievedAndErrors(t *testing.T) {
	var r Row
	lat := []time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond}
	r.addOpen(openRun{Rate: 4, Requests: 4, Errors: 1, Latencies: lat, Wall: 2 * time.Second}, 400*time.Microsecond)
	if r.P50ms != 2 || r.P99ms != 4 || r.Achieved != 2 || r.OpenCPUus != 100 {
		t.Fatalf("row %+v", r)
	}
	if lat[0] != 3*time.Millisecond {
		t.Fatal("addOpen sorted the caller's slice")
	}
	res := Results{Rows: []Row{r}, Soaks: []Soak{{Errors: 2}}}
	if n := res.totalErrors(); n != 3 {
		t.Fatalf("totalErrors = %d", n)
	}
}

func TestWriteChart(t *testing.T) {
	rows := []Row{
		{Contender: roleFloor, Route: routeLogin, MaxRPS: 14200},
		{Contender: roleTable, Route: routeLogin, MaxRPS: 19700},
		{Contender: "wxtoken-ES256", Route: routeLogin, MaxRPS: 6000},
		{Contender: roleFloor, Route: routeJWKS, NA: true},
		{Contender: "wxtoken-ES256", Route: routeJWKS, MaxRPS: 30000},
	}
	var b bytes.Buffer
	if err := writeChart(&b, rows, "title <&>"); err != nil {
		t.Fatal(err)
	}
	var bars, labels int
	var texts []string
	dec := xml.NewDecoder(&b)
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			if el.Name.Local == "title" {
				bars++
			}
		case xml.CharData:
			if s := strings.TrimSpace(string(el)); s != "" {
				texts = append(texts, s)
				labels++
			}
		}
	}
	// One bar per measured row (four), none for the n/a JWKS row.
	if bars != 4 {
		t.Fatalf("%d bars, want 4", bars)
	}
	joined := strings.Join(texts, "|")
	for _, want := range []string{"title <&>", "14.2k", "30.0k", "login", "jwks", "wxtoken-ES256"} {
		if !strings.Contains(joined, want) {
			t.Fatalf("chart text lacks %q: %s", want, joined)
		}
	}
}

func TestNiceStep(t *testing.T) {
	for raw, want := range map[float64]float64{0: 1, 0.3: 0.5, 3: 5, 4500: 5000, 12000: 20000, 1000: 1000} {
		if got := niceStep(raw); got != want {
			t.Errorf("niceStep(%v) = %v, want %v", raw, got, want)
		}
	}
}

func TestParseOptions(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr bool
		check   func(*options) bool
	}{
		{"defaults", nil, false, func(o *options) bool {
			return o.Closed == 8*time.Second && o.Soak == time.Minute && len(o.Algs) == 3 && o.OpenRateMul == 0.5
		}},
		{"smoke shortens and keeps one variant", []string{"-smoke"}, false, func(o *options) bool {
			return o.Closed == time.Second && o.Soak == time.Second && o.Warmup == 0 && len(o.Algs) == 1 && o.OpenRateMul == 0.2
		}},
		{"smoke keeps explicit flags", []string{"-smoke", "-soak", "0", "-algs", "EdDSA,RS256"}, false, func(o *options) bool {
			return o.Soak == 0 && len(o.Algs) == 2
		}},
		{"same cpu twice", []string{"-server-cpu", "1"}, true, nil},
		{"unknown alg", []string{"-algs", "HS256"}, true, nil},
		{"unknown contender", []string{"-contenders", "memcached"}, true, nil},
		{"stray argument", []string{"now"}, true, nil},
		{"help", []string{"-h"}, true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseOptions(tc.args, io.Discard)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if tc.check != nil && !tc.check(o) {
				t.Fatalf("options %+v", o)
			}
		})
	}
}

func TestURLParts(t *testing.T) {
	u := "http://127.0.0.1:8080/v1/login"
	if pathOf(u) != "/v1/login" || baseOf(u) != "http://127.0.0.1:8080" || pathOf("http://h") != "/" {
		t.Fatal(pathOf(u), baseOf(u))
	}
}

func TestWriteMarkdown(t *testing.T) {
	redis := 12.0
	res := &Results{
		Rows: []Row{
			{Contender: roleTable, Route: routeDecrypt, MaxRPS: 36200, P50ms: 0.41, P99ms: 1.5, P999ms: 3.25, CPUus: 27.6, AuxCPUus: &redis},
			{Contender: "wxtoken-ES256", Route: routeDecrypt, MaxRPS: 8900, CPUus: 112, OpenErrors: 2, VsTable: &Ratio{Throughput: 0.2459, Cheaper: 0.3536}},
			{Contender: roleTable, Route: routeJWKS, NA: true},
		},
		Soaks: []Soak{{Contender: "wxtoken-ES256", Route: routeLogin, Rate: 3000, Seconds: 60, Requests: 180000, RSSStartMB: 20, RSSEndMB: 21.5, RSSPeakMB: 22}},
	}
	var b bytes.Buffer
	if err := writeMarkdown(&b, res); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"| decrypt | table | 36200 | 0.41 / 1.50 / 3.25 | 28 + 12 Redis | n/a | 0 |  |  |  |",
		"| decrypt | wxtoken-ES256 | 8900 | 0.00 / 0.00 / 0.00 | 112 | n/a | 2 |  | 0.25× | 0.35× |",
		"| jwks | table | n/a | n/a | n/a | n/a | n/a | | | |",
		"| login | wxtoken-ES256 | 3000 | 60 | 180000 | 0 | 20.0 → 21.5 (22.0) |",
	}
	for _, line := range want {
		if !strings.Contains(b.String(), line+"\n") {
			t.Fatalf("markdown lacks\n%s\nin\n%s", line, b.String())
		}
	}
}

func TestParseAndPairMicro(t *testing.T) {
	out := `goos: linux
pkg: github.com/wxtoken/wxtoken/token
BenchmarkIssue/ES256         	   25000	     48000 ns/op	    5000 B/op	     113 allocs/op
BenchmarkVerify/ES256/cold   	   10000	    104000 ns/op	    6000 B/op	      96 allocs/op
BenchmarkVerify/ES256/cached-2 	  900000	      1300 ns/op	     100 B/op	       2 allocs/op
PASS
pkg: github.com/wxtoken/wxtoken/bench
BenchmarkRawSign/ES256       	   50000	     24000 ns/op	    3000 B/op	      40 allocs/op
BenchmarkRawVerify/ES256     	   20000	     52000 ns/op	    1000 B/op	      20 allocs/op
ok  	github.com/wxtoken/wxtoken/bench	3.1s
`
	ms := pairMicro(parseBench(out))
	if len(ms) != 5 {
		t.Fatalf("parsed %d results: %+v", len(ms), ms)
	}
	want := map[string]struct {
		ns, allocs, vs float64
		raw            string
	}{
		"token.Issue/ES256":         {48000, 113, 2, "bench.RawSign/ES256"},
		"token.Verify/ES256/cold":   {104000, 96, 2, "bench.RawVerify/ES256"},
		"token.Verify/ES256/cached": {1300, 2, 0.025, "bench.RawVerify/ES256"},
		"bench.RawSign/ES256":       {24000, 40, 0, ""},
	}
	for _, m := range ms {
		w, ok := want[m.Name]
		if !ok {
			continue
		}
		if m.NsPerOp != w.ns || m.AllocsPerOp != w.allocs || m.Raw != w.raw || m.VsRaw != w.vs {
			t.Errorf("%s: %+v, want %+v", m.Name, m, w)
		}
		delete(want, m.Name)
	}
	if len(want) > 0 {
		t.Fatalf("not parsed: %v", want)
	}
}

// TestRunHelp: -h prints the flags and is no failure; a bad flag is.
func TestRunHelp(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"bench", "-h"}, func(string) string { return "" }, io.Discard, &out); err != nil {
		t.Fatalf("-h: %v", err)
	}
	if !strings.Contains(out.String(), "-smoke") {
		t.Fatalf("help lacks -smoke: %s", out.String())
	}
	if err := run(t.Context(), []string{"bench", "-nope"}, func(string) string { return "" }, io.Discard, io.Discard); err == nil {
		t.Fatal("an unknown flag was accepted")
	}
}

func TestPromCounter(t *testing.T) {
	exposition := []byte("# HELP go_memstats_mallocs_total Total number of heap objects allocated.\n" +
		"# TYPE go_memstats_mallocs_total counter\n" +
		"go_memstats_mallocs_total_other 7\n" +
		"go_memstats_mallocs_total 1.234567e+06\n")
	n, err := promCounter(exposition, "go_memstats_mallocs_total")
	if err != nil || n != 1234567 {
		t.Fatalf("promCounter = %d, %v; want 1234567", n, err)
	}
	if _, err := promCounter(exposition, "go_memstats_frees_total"); err == nil {
		t.Fatal("a missing counter read as a value")
	}
}

func TestMedianRows(t *testing.T) {
	row := func(contender, route string, cpu float64) Row {
		return Row{Contender: contender, Route: route, CPUus: cpu, MaxRPS: 1e6 / cpu}
	}
	rounds := [][]Row{
		{row(roleFloor, routeLogin, 200), row("wxtoken-ES256", routeLogin, 330)},
		{row(roleFloor, routeLogin, 260), row("wxtoken-ES256", routeLogin, 270)},
		{row(roleFloor, routeLogin, 230), row("wxtoken-ES256", routeLogin, 300)},
	}
	got := medianRows(rounds)
	if len(got) != 2 || got[0].Contender != roleFloor || got[0].CPUus != 230 || got[1].CPUus != 300 {
		t.Fatalf("medians %+v, want the floor's 230 then wxtoken's 300, in the first round's order", got)
	}
	if got := medianRows(rounds[:2]); got[0].CPUus != 200 || got[1].CPUus != 270 {
		t.Fatalf("even count: %+v, want the lower middle rows", got)
	}
	if got := medianRows(rounds[:1]); got[1].CPUus != 330 {
		t.Fatalf("one round: %+v", got)
	}
}
