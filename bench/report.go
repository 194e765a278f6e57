package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Routes measured, in the order they are reported.
const (
	routeLogin    = "login"
	routeDecrypt  = "decrypt"
	routeUserinfo = "userinfo"
	routeJWKS     = "jwks"
)

var allRoutes = []string{routeLogin, routeDecrypt, routeUserinfo, routeJWKS}

// Results is everything a run measured; bench/results.json holds one.
type Results struct {
	Started  time.Time `json:"started"`
	Command  string    `json:"command"`
	Machine  Machine   `json:"machine"`
	Settings Settings  `json:"settings"`
	Rows     []Row     `json:"rows"`
	Soaks    []Soak    `json:"soaks"`
	Micro    []Micro   `json:"micro,omitempty"`
	Notes    []string  `json:"notes"`
}

// Machine says where the numbers come from.
type Machine struct {
	CPU    string `json:"cpu"`
	Cores  int    `json:"cores"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
	Redis  string `json:"redis"`
	Wrk    string `json:"wrk"`
	// LoadStart and LoadEnd are /proc/loadavg when the run began and
	// ended: other work on the machine shows there, and in the numbers.
	LoadStart string `json:"loadavg_start"`
	LoadEnd   string `json:"loadavg_end"`
}

// Settings are the options of the run.
type Settings struct {
	Smoke     bool    `json:"smoke"`
	ClosedS   float64 `json:"closed_s"`
	OpenS     float64 `json:"open_s"`
	SoakS     float64 `json:"soak_s"`
	Conns     int     `json:"connections"`
	Users     int     `json:"users"`
	OpenRate  float64 `json:"open_rate_fraction"`
	ServerCPU int     `json:"server_cpu"`
	LoadCPU   int     `json:"load_cpu"`
	Rounds    int     `json:"rounds,omitempty"`
}

// Row is one route of one contender. NA rows are routes a contender does
// not have (the floor and the table publish no JWKS).
type Row struct {
	Contender string `json:"contender"`
	Route     string `json:"route"`
	NA        bool   `json:"na,omitempty"`

	// Closed loop (wrk): the maximum.
	MaxRPS         float64 `json:"max_rps"`
	ClosedRequests int64   `json:"closed_requests"`
	ClosedErrors   int64   `json:"closed_errors"`
	// ClientCPU is wrk's CPU time over its wall time: near 1 would mean
	// the client, not the server, set the maximum.
	ClientCPU float64 `json:"client_cpu_util"`
	// CPUus is the server process's user+system CPU µs per request at
	// the maximum, from /proc/<pid>/stat.
	CPUus float64 `json:"cpu_us_per_req"`
	// AuxCPUus is Redis's CPU µs per request (the table only).
	AuxCPUus *float64 `json:"redis_cpu_us_per_req,omitempty"`
	// Allocs is heap allocations per request, from the server's
	// runtime/metrics; nil where the server does not expose them.
	Allocs *float64 `json:"allocs_per_req,omitempty"`

	// Open loop (vegeta) at Rate requests per second.
	Rate float64 `json:"rate"`
	// Achieved is the rate really sent: below Rate, the load CPU could
	// not keep up and the latencies include the client's own delay.
	Achieved     float64 `json:"achieved_rate"`
	OpenRequests int64   `json:"open_requests"`
	OpenErrors   int64   `json:"open_errors"`
	P50ms        float64 `json:"p50_ms"`
	P99ms        float64 `json:"p99_ms"`
	P999ms       float64 `json:"p999_ms"`
	OpenCPUus    float64 `json:"open_cpu_us_per_req"`
	FirstError   string  `json:"first_error,omitempty"`

	VsFloor *Ratio `json:"vs_floor,omitempty"`
	VsTable *Ratio `json:"vs_table,omitempty"`
}

// Ratio compares a wxtoken row with the same route of another contender.
// Throughput above 1 is better; P99 and CPU below 1 are better.
type Ratio struct {
	Throughput float64 `json:"throughput"`
	P99        float64 `json:"p99"`
	CPU        float64 `json:"cpu"`
	// Cheaper is the other contender's whole CPU per request (Redis's
	// included, for the table) over wxtoken's: above 1, wxtoken costs the
	// machines that serve it less per request. Throughput compares only
	// the pinned server process; this counts every process the design needs.
	Cheaper float64 `json:"cheaper"`
}

// Soak is a long run at a fixed rate, to see whether memory stays flat.
type Soak struct {
	Contender  string  `json:"contender"`
	Route      string  `json:"route"`
	Rate       float64 `json:"rate"`
	Seconds    float64 `json:"seconds"`
	Requests   int64   `json:"requests"`
	Errors     int64   `json:"errors"`
	RSSStartMB float64 `json:"rss_start_mib"`
	RSSEndMB   float64 `json:"rss_end_mib"`
	RSSPeakMB  float64 `json:"rss_peak_mib"`
	FirstError string  `json:"first_error,omitempty"`
}

// closedRow fills the closed-loop half of a row.
func closedRow(contender, route string, w wrkRun, serverCPU time.Duration, auxCPU *time.Duration, allocs *uint64) Row {
	r := Row{Contender: contender, Route: route, ClosedRequests: w.Summary.Requests, ClosedErrors: w.Summary.errors()}
	if secs := float64(w.Summary.DurationUS) / 1e6; secs > 0 {
		r.MaxRPS = float64(w.Summary.Requests) / secs
	}
	if w.Wall > 0 {
		r.ClientCPU = w.ClientCPU.Seconds() / w.Wall.Seconds()
	}
	r.CPUus = perRequest(serverCPU, w.Summary.Requests)
	if auxCPU != nil {
		v := perRequest(*auxCPU, w.Summary.Requests)
		r.AuxCPUus = &v
	}
	if allocs != nil && w.Summary.Requests > 0 {
		v := float64(*allocs) / float64(w.Summary.Requests)
		r.Allocs = &v
	}
	return r
}

// addOpen fills the open-loop half of a row.
func (r *Row) addOpen(o openRun, serverCPU time.Duration) {
	r.Rate, r.OpenRequests, r.OpenErrors, r.FirstError = o.Rate, o.Requests, o.Errors, o.FirstError
	if o.Wall > 0 {
		r.Achieved = float64(o.Requests) / o.Wall.Seconds()
	}
	sorted := slices.Clone(o.Latencies)
	slices.Sort(sorted)
	r.P50ms = ms(quantile(sorted, 0.50))
	r.P99ms = ms(quantile(sorted, 0.99))
	r.P999ms = ms(quantile(sorted, 0.999))
	r.OpenCPUus = perRequest(serverCPU, o.Requests)
}

func perRequest(cpu time.Duration, n int64) float64 {
	if n <= 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / float64(n)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// quantile is the nearest-rank q-quantile of sorted latencies: the
// smallest value with at least q of all values at or below it. Exact,
// not estimated, so p99.9 of a short run is its real tail.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// addRatios sets VsFloor and VsTable on every wxtoken row whose route the
// floor and the table also measured.
func addRatios(rows []Row) {
	find := func(contender, route string) *Row {
		for i := range rows {
			if rows[i].Contender == contender && rows[i].Route == route && !rows[i].NA {
				return &rows[i]
			}
		}
		return nil
	}
	for i := range rows {
		r := &rows[i]
		if !strings.HasPrefix(r.Contender, "wxtoken") || r.NA {
			continue
		}
		if f := find(roleFloor, r.Route); f != nil {
			r.VsFloor = ratio(r, f)
		}
		if t := find(roleTable, r.Route); t != nil {
			r.VsTable = ratio(r, t)
		}
	}
}

// medianRows keeps, for each contender and route, the row of median CPU
// per request among the rounds (the lower middle one for an even count),
// in the order of the first round.
func medianRows(rounds [][]Row) []Row {
	if len(rounds) == 0 {
		return nil
	}
	type key struct{ contender, route string }
	byKey := map[key][]Row{}
	for _, rows := range rounds {
		for _, r := range rows {
			k := key{r.Contender, r.Route}
			byKey[k] = append(byKey[k], r)
		}
	}
	out := make([]Row, 0, len(rounds[0]))
	for _, first := range rounds[0] {
		rs := byKey[key{first.Contender, first.Route}]
		slices.SortStableFunc(rs, func(a, b Row) int { return cmp.Compare(a.CPUus, b.CPUus) })
		out = append(out, rs[(len(rs)-1)/2])
	}
	return out
}

func ratio(a, b *Row) *Ratio {
	div := func(x, y float64) float64 {
		if y == 0 {
			return 0
		}
		return x / y
	}
	total := func(r *Row) float64 {
		if r.AuxCPUus != nil {
			return r.CPUus + *r.AuxCPUus
		}
		return r.CPUus
	}
	return &Ratio{Throughput: div(a.MaxRPS, b.MaxRPS), P99: div(a.P99ms, b.P99ms), CPU: div(a.CPUus, b.CPUus),
		Cheaper: div(total(b), total(a))}
}

// totalErrors counts every failed request of the run.
func (res *Results) totalErrors() int64 {
	var n int64
	for _, r := range res.Rows {
		n += r.ClosedErrors + r.OpenErrors
	}
	for _, s := range res.Soaks {
		n += s.Errors
	}
	return n
}

// printTable writes the human-readable report.
func printTable(w io.Writer, res *Results) {
	m := res.Machine
	fmt.Fprintf(w, "machine: %s, %d cores, %s; load average %s at start, %s at end\n\n", m.CPU, m.Cores, m.Go, m.LoadStart, m.LoadEnd)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "route\tcontender\tmax req/s\tp50 ms\tp99 ms\tp99.9 ms\tat req/s\tCPU µs/req\tallocs/req\terrors\twrk CPU\t×floor\t×table\ttable CPU÷\t")
	for _, r := range res.Rows {
		if r.NA {
			fmt.Fprintf(tw, "%s\t%s\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\t\n", r.Route, r.Contender)
			continue
		}
		cpu := fmt.Sprintf("%.1f", r.CPUus)
		if r.AuxCPUus != nil {
			cpu += fmt.Sprintf(" +%.1f redis", *r.AuxCPUus)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.2f\t%.2f\t%.2f\t%.0f\t%.0f\t%s\t%s\t%d\t%.0f%%\t%s\t%s\t%s\t\n",
			r.Route, r.Contender, r.MaxRPS, r.P50ms, r.P99ms, r.P999ms, r.Rate, r.Achieved, cpu, optFloat(r.Allocs, "%.0f"),
			r.ClosedErrors+r.OpenErrors, 100*r.ClientCPU, ratioText(r.VsFloor), ratioText(r.VsTable), cheaperText(r.VsTable))
	}
	tw.Flush()
	if len(res.Soaks) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "soak\tcontender\treq/s\tseconds\trequests\terrors\tRSS start MiB\tRSS end MiB\tRSS peak MiB\t")
		for _, s := range res.Soaks {
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%d\t%d\t%.1f\t%.1f\t%.1f\t\n",
				s.Route, s.Contender, s.Rate, s.Seconds, s.Requests, s.Errors, s.RSSStartMB, s.RSSEndMB, s.RSSPeakMB)
		}
		tw.Flush()
	}
	for _, n := range res.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

func optFloat(v *float64, format string) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *v)
}

func cheaperText(r *Ratio) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f", r.Cheaper)
}

func ratioText(r *Ratio) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f", r.Throughput)
}

// writeJSON writes res to path, indented for diffs.
func (res *Results) writeFile(path string) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// writeMarkdown writes the results as the README's tables: one row per
// route and contender, then the soak.
func writeMarkdown(w io.Writer, res *Results) error {
	var b strings.Builder
	b.WriteString("| route | contender | max req/s | p50 / p99 / p99.9 ms at ½ max | CPU µs/req | allocs/req | errors | × floor | × table | table CPU ÷ wxtoken's |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range res.Rows {
		if r.NA {
			fmt.Fprintf(&b, "| %s | %s | n/a | n/a | n/a | n/a | n/a | | | |\n", r.Route, r.Contender)
			continue
		}
		cpu := fmt.Sprintf("%.0f", r.CPUus)
		if r.AuxCPUus != nil {
			cpu += fmt.Sprintf(" + %.0f Redis", *r.AuxCPUus)
		}
		vs := func(x *Ratio) string {
			if x == nil {
				return ""
			}
			return fmt.Sprintf("%.2f×", x.Throughput)
		}
		cheaper := ""
		if r.VsTable != nil {
			cheaper = fmt.Sprintf("%.2f×", r.VsTable.Cheaper)
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %.2f / %.2f / %.2f | %s | %s | %d | %s | %s | %s |\n",
			r.Route, r.Contender, r.MaxRPS, r.P50ms, r.P99ms, r.P999ms, cpu, optFloat(r.Allocs, "%.0f"),
			r.ClosedErrors+r.OpenErrors, vs(r.VsFloor), vs(r.VsTable), cheaper)
	}
	if len(res.Soaks) > 0 {
		b.WriteString("\n| soak | contender | req/s | seconds | requests | errors | RSS start → end (peak) MiB |\n")
		b.WriteString("|---|---|--:|--:|--:|--:|--:|\n")
		for _, s := range res.Soaks {
			fmt.Fprintf(&b, "| %s | %s | %.0f | %.0f | %d | %d | %.1f → %.1f (%.1f) |\n",
				s.Route, s.Contender, s.Rate, s.Seconds, s.Requests, s.Errors, s.RSSStartMB, s.RSSEndMB, s.RSSPeakMB)
		}
	}
	if len(res.Micro) > 0 {
		b.WriteString("\n| call (go test -bench, one core) | µs | allocs | raw primitive | µs | × raw |\n")
		b.WriteString("|---|--:|--:|---|--:|--:|\n")
		byName := map[string]Micro{}
		for _, m := range res.Micro {
			byName[m.Name] = m
		}
		for _, m := range res.Micro {
			if strings.HasPrefix(m.Name, "bench.") {
				continue
			}
			raw, rawUS, vs := "", "", ""
			if r, ok := byName[m.Raw]; ok {
				raw, rawUS, vs = strings.TrimPrefix(r.Name, "bench."), fmt.Sprintf("%.2f", r.NsPerOp/1000), fmt.Sprintf("%.1f×", m.VsRaw)
			}
			fmt.Fprintf(&b, "| %s | %.2f | %.0f | %s | %s | %s |\n", m.Name, m.NsPerOp/1000, m.AllocsPerOp, raw, rawUS, vs)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
