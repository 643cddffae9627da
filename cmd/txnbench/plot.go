package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// Estimated advance of one character, as a fraction of the font size, of
// the sans-serif fonts SVG viewers use (an average letter is about 0.55em;
// the estimate errs wide so that text never runs into its neighbour).
const (
	charEm     = 0.62
	boldCharEm = 0.68
)

// Font sizes of the plot, in px.
const (
	titleSize = 15.0
	textSize  = 12.0
)

// textBox is a piece of text of the plot and the box it covers, for the
// tests that check that nothing collides or leaves the canvas.
type textBox struct {
	role       string // "title", "subtitle", "panel", "x-label", "y-tick", "axis", "value", "legend"
	text       string
	x0, y0     float64 // top-left corner of the box
	x1, y1     float64 // bottom-right corner
	rotatedDeg float64
}

// canvas accumulates an SVG document and the boxes of its text.
type canvas struct {
	b      strings.Builder
	texts  []textBox
	width  float64
	height float64
}

// textWidth estimates the width in px of s at size px.
func textWidth(s string, size float64, bold bool) float64 {
	em := charEm
	if bold {
		em = boldCharEm
	}
	return float64(len([]rune(s))) * size * em
}

// text draws s with its anchor ("start", "middle", "end") at (x, y), the
// baseline, and records its box.
func (c *canvas) text(role, s string, x, y, size float64, anchor, extra string, bold bool) {
	w := textWidth(s, size, bold)
	x0 := x
	switch anchor {
	case "middle":
		x0 = x - w/2
	case "end":
		x0 = x - w
	}
	weight := ""
	if bold {
		weight = ` font-weight="bold"`
	}
	fmt.Fprintf(&c.b, `<text x="%.1f" y="%.1f" font-size="%.0f" text-anchor="%s"%s%s>%s</text>`+"\n", x, y, size, anchor, weight, extra, esc(s))
	c.texts = append(c.texts, textBox{role: role, text: s, x0: x0, y0: y - size*0.8, x1: x0 + w, y1: y + size*0.25})
}

// rotatedLabel draws s ending at (x, y), rotated by -deg degrees (rising
// to the right), and records the box around the rotated text.
func (c *canvas) rotatedLabel(s string, x, y, size, deg float64) {
	w := textWidth(s, size, false)
	r := deg * math.Pi / 180
	fmt.Fprintf(&c.b, `<text x="%.1f" y="%.1f" font-size="%.0f" text-anchor="end" transform="rotate(-%.0f %.1f %.1f)">%s</text>`+"\n",
		x, y, size, deg, x, y, esc(s))
	// The text runs from (x, y) down and to the left by w.
	c.texts = append(c.texts, textBox{role: "x-label", text: s, rotatedDeg: deg,
		x0: x - w*math.Cos(r) - size*0.5, y0: y - size*0.8, x1: x + size*0.5, y1: y + w*math.Sin(r) + size*0.25})
}

// plotSVG draws two bar charts side by side: goodput per policy (as a ratio
// to the serial baseline with --compare, in commits/s otherwise), with the
// share of failed transfers written above a bar that has some, and p99 latency per policy. It is plain
// SVG 1.1 with no script or external reference.
func plotSVG(r *report) []byte {
	return drawPlot(r).bytes()
}

func (c *canvas) bytes() []byte {
	head := fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n"+
		`<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n", c.width, c.height, c.width, c.height)
	return []byte(head + c.b.String() + "</svg>\n")
}

// panelSpec is one bar chart.
type panelSpec struct {
	title, yTitle string
	vals          []float64
	notes         []string // "N%" failed, drawn in red above a bar when not empty
	color         string
	ref           float64 // a dashed reference line unless NaN
	refLabel      string
}

// drawPlot lays the plot out: the width of the panels grows with the number
// of policies, x-axis labels are rotated when they would not fit side by
// side, and the subtitle wraps to the width.
func drawPlot(r *report) *canvas {
	n := len(r.Results)
	names := make([]string, n)
	colors := make([]string, n)
	good := make([]float64, n)
	lost := make([]string, n)
	p99 := make([]float64, n)
	goodY := "commits per second"
	goodTitle := "goodput (committed transfers)"
	for i, res := range r.Results {
		names[i] = res.Policy
		colors[i] = "#3b6ea8"
		if p := findPolicy(res.Policy); p != nil && p.plain {
			names[i] = res.Policy + " (no txn)"
			colors[i] = "#8c8c8c"
		}
		scale := 1.0
		if res.RatioToBaseline != nil && r.Baseline != nil && r.Baseline.CommitsPerSecond > 0 {
			scale = 1 / r.Baseline.CommitsPerSecond
			goodY = "× serial goodput (dashed line)"
		}
		good[i] = res.CommitsPerSecond * scale
		if res.Failed > 0 {
			lost[i] = fmt.Sprintf("%.0f%%", 100*float64(res.Failed)/float64(res.Failed+res.Commits))
		}
		p99[i] = res.LatencyMs.P99
	}

	// Horizontal layout: each bar gets a slot, widened (up to maxFlatW in
	// all) so that the labels lie flat; when they still do not fit, they
	// are rotated by 45°.
	const minSlot, minPlotW, rightM = 56.0, 280.0, 16.0
	labelW := 0.0
	for _, s := range names {
		labelW = math.Max(labelW, textWidth(s, textSize, false))
	}
	const maxFlatW = 600.0 // widest plot area whose labels still lie flat
	plotW := math.Max(minPlotW, float64(n)*minSlot)
	if flat := float64(n) * math.Max(minSlot, labelW+12); flat > plotW && flat <= maxFlatW {
		plotW = flat
	}
	slot := plotW / math.Max(float64(n), 1)
	rotate := labelW > slot-8
	leftM := 72.0 // y tick labels and the y-axis title
	labelH := 22.0
	if rotate {
		d := labelW * math.Sqrt2 / 2
		leftM = math.Max(leftM, d-slot/2+16)
		labelH = d + 20
	}
	panelW := leftM + plotW + rightM
	width := 2 * panelW

	c := &canvas{width: width}
	// Title and subtitle, wrapped to the width.
	title := "txnbench: goodput and p99 latency per policy"
	y := 24.0
	for _, line := range wrapText(title, " ", width-24, titleSize, true) {
		c.text("title", line, width/2, y, titleSize, "middle", "", true)
		y += titleSize + 5
	}
	sub := fmt.Sprintf("%s, %d workers, %d accounts, %s, lock order %s", r.Backend, r.Workers, r.Accounts, r.Isolation, r.LockOrder)
	if r.SQLiteBegin != "" {
		sub += ", BEGIN " + strings.ToUpper(r.SQLiteBegin)
	}
	if r.Duration != "" {
		sub += ", " + r.Duration + " per policy"
	}
	for _, line := range wrapText(sub, ", ", width-24, textSize, false) {
		c.text("subtitle", line, width/2, y, textSize, "middle", ` fill="#444444"`, false)
		y += textSize + 4
	}
	panelTop := y + 20 // panel titles
	// Room above the tallest bar for its value and a note.
	plotTop := panelTop + 54
	const plotH = 240.0
	c.height = plotTop + plotH + labelH + 26

	ref := math.NaN()
	if goodY != "commits per second" {
		ref = 1
	}
	panels := []panelSpec{
		{title: goodTitle, yTitle: goodY, vals: good, notes: lost, color: "#3b6ea8", ref: ref, refLabel: "the one-worker serial baseline"},
		{title: "p99 latency of committed transfers", yTitle: "milliseconds", vals: p99, color: "#c0504d", ref: math.NaN()},
	}
	for i, p := range panels {
		x0 := float64(i) * panelW
		px := x0 + leftM
		c.text("panel", p.title, px+plotW/2, panelTop, 13, "middle", "", false)
		c.bars(p, names, colors, px, plotTop, plotW, plotH, i == 0)
		// Axis titles: y rotated along the axis, x under the labels.
		yMid := plotTop + plotH/2
		fmt.Fprintf(&c.b, `<text x="%.1f" y="%.1f" text-anchor="middle" transform="rotate(-90 %.1f %.1f)" fill="#333333">%s</text>`+"\n",
			x0+16, yMid, x0+16, yMid, esc(p.yTitle))
		c.texts = append(c.texts, textBox{role: "axis", text: p.yTitle, rotatedDeg: 90,
			x0: x0 + 16 - textSize*0.8, y0: yMid - textWidth(p.yTitle, textSize, false)/2, x1: x0 + 16 + textSize*0.25, y1: yMid + textWidth(p.yTitle, textSize, false)/2})
		c.text("axis", "policy", px+plotW/2, plotTop+plotH+labelH+14, textSize, "middle", ` fill="#333333"`, false)
		for j, name := range names {
			cx := px + slot*float64(j) + slot/2
			if rotate {
				c.rotatedLabel(name, cx+4, plotTop+plotH+14, textSize, 45)
			} else {
				c.text("x-label", name, cx, plotTop+plotH+16, textSize, "middle", "", false)
			}
		}
	}
	return c
}

// bars draws the bars of p in the plot area at (px, top), w by h, and its
// y axis. ticks says whether the value labels are drawn in the bar colour.
func (c *canvas) bars(p panelSpec, names, colors []string, px, top, w, h float64, perBarColor bool) {
	hi := 0.0
	for _, v := range p.vals {
		hi = math.Max(hi, v)
	}
	if !math.IsNaN(p.ref) {
		hi = math.Max(hi, p.ref)
	}
	step := niceStep(hi / 4)
	hi = step * math.Ceil(hi/step)
	if hi <= 0 {
		hi, step = 1, 0.25
	}
	y := func(v float64) float64 { return top + h - v/hi*h }
	for v := 0.0; v <= hi+step/2; v += step {
		fmt.Fprintf(&c.b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#dddddd"/>`+"\n", px, y(v), px+w, y(v))
		c.text("y-tick", fmtNum(v), px-6, y(v)+4, textSize, "end", ` fill="#555555"`, false)
	}
	fmt.Fprintf(&c.b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333333"/>`+"\n", px, top, px, top+h)
	fmt.Fprintf(&c.b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333333"/>`+"\n", px, top+h, px+w, top+h)
	if !math.IsNaN(p.ref) {
		// Named by the y-axis title, not by a label that bars could hide.
		fmt.Fprintf(&c.b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333333" stroke-dasharray="5,4"><title>%s</title></line>`+"\n",
			px, y(p.ref), px+w, y(p.ref), esc(p.refLabel))
	}
	n := float64(len(p.vals))
	slot := w / math.Max(n, 1)
	bw := math.Min(slot*0.6, 80)
	for i, v := range p.vals {
		color := p.color
		if perBarColor {
			color = colors[i]
		}
		x := px + slot*float64(i) + (slot-bw)/2
		fmt.Fprintf(&c.b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s: %s</title></rect>`+"\n",
			x, y(v), bw, top+h-y(v), color, esc(names[i]), esc(fmtNum(v)))
		c.text("value", fmtNum(v), x+bw/2, y(v)-4, textSize, "middle", "", false)
		if p.notes != nil && p.notes[i] != "" {
			// Two short lines, so that the note is no wider than a slot.
			c.text("value", "failed", x+bw/2, y(v)-18, textSize, "middle", ` fill="#c9302c"`, true)
			c.text("value", p.notes[i], x+bw/2, y(v)-32, textSize, "middle", ` fill="#c9302c"`, true)
		}
	}
}

// wrapText splits s at sep into lines no wider than width px.
func wrapText(s, sep string, width, size float64, bold bool) []string {
	var lines []string
	line := ""
	for _, word := range strings.Split(s, sep) {
		try := word
		if line != "" {
			try = line + sep + word
		}
		if line != "" && textWidth(try, size, bold) > width {
			lines = append(lines, line)
			line = word
			continue
		}
		line = try
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
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
