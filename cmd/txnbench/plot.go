package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// plotSVG draws two bar charts side by side: goodput per policy (as a ratio
// to the serial baseline with --compare, in commits/s otherwise) and p99
// latency per policy. It is plain SVG 1.1 with no script or external
// reference.
func plotSVG(r *report) []byte {
	const (
		panelW, panelH = 400.0, 300.0
		top, bottom    = 56.0, 56.0
		left, right    = 64.0, 20.0
	)
	width, height := 2*panelW, panelH+top
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	title := fmt.Sprintf("txnbench: %s, %d workers, %d accounts, %s, lock order %s",
		r.Backend, r.Workers, r.Accounts, r.Isolation, r.LockOrder)
	if r.SQLiteBegin != "" {
		title += ", BEGIN " + strings.ToUpper(r.SQLiteBegin)
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="22" text-anchor="middle" font-size="15" font-weight="bold">%s</text>`+"\n", width/2, esc(title))

	names := make([]string, len(r.Results))
	good := make([]float64, len(r.Results))
	p99 := make([]float64, len(r.Results))
	goodTitle := "goodput (commits/s)"
	for i, res := range r.Results {
		names[i] = res.Policy
		good[i] = res.CommitsPerSecond
		if res.RatioToBaseline != nil {
			good[i] = *res.RatioToBaseline
			goodTitle = "goodput vs 1-worker serial baseline (×)"
		}
		p99[i] = res.LatencyMs.P99
	}
	ref := math.NaN()
	if r.Baseline != nil && goodTitle != "goodput (commits/s)" {
		ref = 1
	}
	bars(&b, 0, top, panelW, panelH-bottom, left, right, goodTitle, names, good, ref, "serial", "#3b6ea8")
	bars(&b, panelW, top, panelW, panelH-bottom, left, right, "p99 latency (ms)", names, p99, math.NaN(), "", "#c0504d")
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

// bars draws one bar chart in the box at (x0, y0) of width w whose plot
// area is h high. ref, unless NaN, is drawn as a dashed line labelled
// refLabel.
func bars(b *strings.Builder, x0, y0, w, h, left, right float64, title string, names []string, vals []float64, ref float64, refLabel, color string) {
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="13">%s</text>`+"\n", x0+w/2, y0-14, esc(title))
	hi := 0.0
	for _, v := range vals {
		hi = math.Max(hi, v)
	}
	if !math.IsNaN(ref) {
		hi = math.Max(hi, ref)
	}
	step := niceStep(hi / 4)
	hi = step * math.Ceil(hi/step)
	if hi <= 0 {
		hi, step = 1, 0.25
	}
	px, pw := x0+left, w-left-right
	y := func(v float64) float64 { return y0 + h - v/hi*h }
	for v := 0.0; v <= hi+step/2; v += step {
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#dddddd"/>`+"\n", px, y(v), px+pw, y(v))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#555555">%s</text>`+"\n", px-6, y(v)+4, esc(fmtNum(v)))
	}
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333333"/>`+"\n", px, y0+h, px+pw, y0+h)
	n := float64(len(vals))
	slot := pw / math.Max(n, 1)
	bw := slot * 0.6
	for i, v := range vals {
		x := px + slot*float64(i) + (slot-bw)/2
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s: %s</title></rect>`+"\n",
			x, y(v), bw, y0+h-y(v), color, esc(names[i]), esc(fmtNum(v)))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x+bw/2, y(v)-4, esc(fmtNum(v)))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x+bw/2, y0+h+16, esc(names[i]))
	}
	if !math.IsNaN(ref) {
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333333" stroke-dasharray="5,4"/>`+"\n", px, y(ref), px+pw, y(ref))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#333333">%s</text>`+"\n", px+pw, y(ref)-4, esc(refLabel))
	}
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	if x <= 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

// fmtNum formats an axis or bar value compactly.
func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 10000:
		return fmt.Sprintf("%.0fk", v/1000)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func esc(s string) string { return html.EscapeString(s) }
