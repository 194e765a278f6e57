package main

import (
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strings"
)

// chartColors tells contenders apart; wxtoken variants share warm tones.
var chartColors = []string{"#7f7f7f", "#1f77b4", "#d62728", "#ff7f0e", "#9467bd", "#2ca02c"}

// writeChart draws grouped bars of max throughput: one group per route,
// one bar per contender, its value on top. Routes a contender lacks get
// no bar. The SVG is plain text so the README diff of a re-run is readable.
func writeChart(w io.Writer, rows []Row, title string) error {
	var routes, contenders []string
	value := map[[2]string]float64{}
	for _, r := range rows {
		if !slices.Contains(routes, r.Route) {
			routes = append(routes, r.Route)
		}
		if !slices.Contains(contenders, r.Contender) {
			contenders = append(contenders, r.Contender)
		}
		if !r.NA {
			value[[2]string{r.Route, r.Contender}] = r.MaxRPS
		}
	}
	top := 0.0
	for _, v := range value {
		top = max(top, v)
	}
	step := niceStep(top / 5)
	top = math.Max(step, math.Ceil(top/step)*step)

	const (
		left, right, topPad, bottom = 70.0, 20.0, 50.0, 80.0
		barW, gap, groupGap         = 22.0, 2.0, 30.0
		plotH                       = 300.0
	)
	groupW := float64(len(contenders))*(barW+gap) - gap
	width := left + right + float64(len(routes))*(groupW+groupGap)
	height := topPad + plotH + bottom
	y := func(v float64) float64 { return topPad + plotH - v/top*plotH }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="20" font-size="14" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))
	for v := 0.0; v <= top+step/2; v += step {
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, width-right, y(v), y(v))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y(v)+4, short(v))
	}
	fmt.Fprintf(&b, `<text x="14" y="%.0f" transform="rotate(-90 14 %.0f)" text-anchor="middle">max requests/s (one core)</text>`+"\n",
		topPad+plotH/2, topPad+plotH/2)
	for gi, route := range routes {
		gx := left + groupGap/2 + float64(gi)*(groupW+groupGap)
		for ci, c := range contenders {
			v, ok := value[[2]string{route, c}]
			if !ok {
				continue
			}
			x := gx + float64(ci)*(barW+gap)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.0f" height="%.1f" fill="%s"><title>%s %s: %.0f req/s</title></rect>`+"\n",
				x, y(v), barW, topPad+plotH-y(v), chartColors[ci%len(chartColors)], html.EscapeString(c), route, v)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%s</text>`+"\n", x+barW/2, y(v)-3, short(v))
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle" font-size="12">%s</text>`+"\n", gx+groupW/2, topPad+plotH+18, html.EscapeString(route))
	}
	lx := left
	for ci, c := range contenders {
		ly := topPad + plotH + 40 + float64(ci/3)*16
		x := lx + float64(ci%3)*150
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="12" height="12" fill="%s"/>`+"\n", x, ly-10, chartColors[ci%len(chartColors)])
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f">%s</text>`+"\n", x+16, ly, html.EscapeString(c))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// niceStep rounds a raw axis step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// short writes 12345 as 12.3k.
func short(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.1fk", v/1000)
	}
	return fmt.Sprintf("%.0f", v)
}
