package main

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// Micro is one `go test -bench -benchmem` result: wxtoken's own per-call
// work (token, keys, wechat) and the raw primitives under it (bench).
type Micro struct {
	// Name is package.Benchmark/sub without the Benchmark prefix, e.g.
	// token.Issue/ES256 or bench.RawSign/ES256.
	Name        string  `json:"name"`
	NsPerOp     float64 `json:"ns_per_op"`
	BytesPerOp  float64 `json:"bytes_per_op"`
	AllocsPerOp float64 `json:"allocs_per_op"`
	// Raw is the name of the primitive this call is built on, and
	// VsRaw its time over the primitive's.
	Raw   string  `json:"raw,omitempty"`
	VsRaw float64 `json:"vs_raw,omitempty"`
}

// microPackages and microPattern select the benchmarks: issue, verify
// (every variant the token package has, cold or cached), seal/open, the
// user-data decrypt of a good payload, and the raw primitives.
var (
	microPackages = []string{"./token/", "./keys/", "./wechat/", "./bench/"}
	microPattern  = "^Benchmark(Issue|Verify|SealOpen|DecryptUserData|Raw)"
)

// runMicro runs the micro benchmarks on the server CPU with one P, like
// the servers.
func runMicro(ctx context.Context, root string, cpu int) ([]Micro, error) {
	args := append([]string{"-c", strconv.Itoa(cpu), "go", "test", "-run", "^$", "-bench", microPattern,
		"-benchmem", "-cpu", "1"}, microPackages...)
	cmd := exec.CommandContext(ctx, "taskset", args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go test -bench: %w: %s", err, out)
	}
	return pairMicro(parseBench(string(out))), nil
}

var benchLine = regexp.MustCompile(`^Benchmark(\S+?)(-\d+)?\s+\d+\s+([\d.]+) ns/op(?:\s+([\d.]+) B/op)?(?:\s+([\d.]+) allocs/op)?`)

// parseBench reads go test's benchmark lines; "pkg:" lines name the
// package of those that follow.
func parseBench(out string) []Micro {
	var res []Micro
	pkg := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = path.Base(strings.TrimSpace(p))
			continue
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		num := func(s string) float64 { v, _ := strconv.ParseFloat(s, 64); return v }
		res = append(res, Micro{Name: pkg + "." + m[1], NsPerOp: num(m[3]), BytesPerOp: num(m[4]), AllocsPerOp: num(m[5])})
	}
	return res
}

// pairMicro sets each wxtoken call beside its primitive: Issue/ALG with
// RawSign/ALG, Verify/ALG/... with RawVerify/ALG, SealOpen with
// RawSealOpen, DecryptUserData/ok with RawCBCDecrypt.
func pairMicro(ms []Micro) []Micro {
	byName := map[string]Micro{}
	for _, m := range ms {
		byName[m.Name] = m
	}
	for i, m := range ms {
		parts := strings.Split(m.Name, "/")
		var raw string
		switch {
		case strings.HasPrefix(m.Name, "token.Issue/") && len(parts) > 1:
			raw = "bench.RawSign/" + parts[1]
		case strings.HasPrefix(m.Name, "token.Verify/") && len(parts) > 1:
			raw = "bench.RawVerify/" + parts[1]
		case m.Name == "keys.SealOpen":
			raw = "bench.RawSealOpen"
		case m.Name == "wechat.DecryptUserData/ok":
			raw = "bench.RawCBCDecrypt"
		}
		if r, ok := byName[raw]; ok && r.NsPerOp > 0 {
			ms[i].Raw, ms[i].VsRaw = raw, m.NsPerOp/r.NsPerOp
		}
	}
	return ms
}
