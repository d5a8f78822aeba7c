package loadgen

import (
	"image/color"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// seriesLine is one line of a series panel: its label and its value at a
// sample (ok false leaves the sample out).
type seriesLine struct {
	label string
	val   func(s SeriesSample) (float64, bool)
}

func always1(f func(s SeriesSample) float64) func(s SeriesSample) (float64, bool) {
	return func(s SeriesSample) (float64, bool) { return f(s), true }
}

func positive(f func(s SeriesSample) float64) func(s SeriesSample) (float64, bool) {
	return func(s SeriesSample) (float64, bool) { v := f(s); return v, v > 0 }
}

// WritePNG draws the series in panels, two by two: posts/s; the p99s;
// rollout %, reconcile progress and the guards; rows written per second by
// source; CPU; the outbox; memory. It returns the error of drawing or of
// writing the file.
func (rep *CutoverReport) WritePNG(path string) error {
	s := rep.Series
	panels := []*plot.Plot{
		seriesPanel(s, "Posts per second (per interval)", "posts/s", false,
			seriesLine{"completed", always1(func(s SeriesSample) float64 { return s.PostsPerSec })},
			seriesLine{"accepted", always1(func(s SeriesSample) float64 { return s.AcceptedPerSec })}),
		seriesPanel(s, "p99 per interval", "ms (log scale)", true,
			seriesLine{"Post", positive(func(s SeriesSample) float64 { return s.PostP99Ms })},
			seriesLine{"save", positive(func(s SeriesSample) float64 { return s.SaveP99Ms })},
			seriesLine{"Post → small-tag count", positive(func(s SeriesSample) float64 { return s.CountP99Ms })}),
		seriesPanel(s, "Rollout, reconcile and guards", "%", false, rolloutLines(s)...),
		seriesPanel(s, "Database rows written per second, by source", "rows/s", false,
			seriesLine{"posting (rest)", always1(func(s SeriesSample) float64 { return s.Rows.Posting })},
			seriesLine{"counter", always1(func(s SeriesSample) float64 { return s.Rows.Counter })},
			seriesLine{"reconcile", always1(func(s SeriesSample) float64 { return s.Rows.Reconcile })},
			seriesLine{"wrangling", always1(func(s SeriesSample) float64 { return s.Rows.Wrangling })}),
		seriesPanel(s, "CPU", "cores", false,
			seriesLine{"database server", func(s SeriesSample) (float64, bool) { return s.DBCores, s.DBCores >= 0 }},
			seriesLine{"this process (service + load)", always1(func(s SeriesSample) float64 { return s.ProcessCores })}),
		seriesPanel(s, "Outbox", "rows; s", false,
			seriesLine{"rows", always1(func(s SeriesSample) float64 { return float64(s.OutboxRows) })},
			seriesLine{"oldest age (s)", always1(func(s SeriesSample) float64 { return s.OutboxAgeS })}),
		seriesPanel(s, "Memory of the process (service + load generator)", "MiB", false,
			seriesLine{"RSS", always1(func(s SeriesSample) float64 { return s.RSSMiB })},
			seriesLine{"Go heap objects", always1(func(s SeriesSample) float64 { return s.HeapMiB })}),
		seriesPanel(s, "Reconcile corrections per second", "corrections/s", false,
			seriesLine{"applied", always1(func(s SeriesSample) float64 { return s.CorrectionsPerS })}),
	}
	return saveGridPNG(path, 14*vg.Inch, 14*vg.Inch, 2, panels...)
}

// rolloutLines are the rollout's percentage, the reconcile's progress, and
// each guard's value as a percentage of its bound (over 100: failing).
func rolloutLines(samples []SeriesSample) []seriesLine {
	lines := []seriesLine{
		{"rollout %", always1(func(s SeriesSample) float64 { return float64(s.RolloutPercent) })},
		{"reconcile progress %", always1(func(s SeriesSample) float64 { return 100 * s.ReconcileDone })},
	}
	var names []string
	for _, s := range samples {
		for _, g := range s.Guards {
			if !slices.Contains(names, g.Name) {
				names = append(names, g.Name)
			}
		}
	}
	for _, name := range names {
		lines = append(lines, seriesLine{"guard " + name + " (% of bound)", func(s SeriesSample) (float64, bool) {
			for _, g := range s.Guards {
				if g.Name == name && g.Bound > 0 {
					return min(100*g.Value/g.Bound, 300), true
				}
			}
			return 0, false
		}})
	}
	return lines
}

var seriesColors = []color.RGBA{
	{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, {R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, {R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, {R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}, {R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
	{R: 0xe3, G: 0x77, B: 0xc2, A: 0xff}, {R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff}, {R: 0x17, G: 0xbe, B: 0xcf, A: 0xff},
}

// seriesPanel draws lines over the samples' times.
func seriesPanel(samples []SeriesSample, title, ylabel string, logY bool, lines ...seriesLine) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "seconds since the load started"
	p.Y.Label.Text = ylabel
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())
	top := 0.0
	for i, ln := range lines {
		var xys plotter.XYs
		for _, s := range samples {
			if v, ok := ln.val(s); ok {
				xys = append(xys, plotter.XY{X: s.T, Y: v})
				top = max(top, v)
			}
		}
		if len(xys) == 0 {
			continue
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			continue
		}
		l.Color, l.Width = seriesColors[i%len(seriesColors)], vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(ln.label, l)
	}
	p.X.Min = 0
	if logY {
		p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, logTicks{}
		p.Y.Min, p.Y.Max = 1, max(top*4, 10)
	} else {
		p.Y.Min, p.Y.Max = 0, max(top*1.35, 1)
	}
	return p
}
