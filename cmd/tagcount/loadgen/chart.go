package loadgen

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// pathColors keeps a path's colour the same in both panels.
var pathColors = []color.RGBA{
	{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, // red
	{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, // blue
	{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, // green
	{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, // purple
}

// WritePNG draws, per path over the seconds of its run, completed posts/s
// (top) and the p99 latency of Post requests (bottom, log scale). It
// returns the error of drawing or of writing the file.
func (rep *Report) WritePNG(path string) error {
	rate, p99 := newRatePlot(), newP99Plot()
	var ext extent
	for i, r := range rep.Results {
		if err := addPathLines(rate, p99, r, pathColors[i%len(pathColors)], &ext); err != nil {
			return err
		}
	}
	// Room above the lines for the legend.
	rate.Y.Max = max(1, ext.rate) * 1.3
	rate.X.Min, p99.X.Min = 0, 0
	rate.X.Max, p99.X.Max = max(ext.x, 1), max(ext.x, 1)
	if ext.p99 > 0 {
		p99.Y.Max = ext.p99 * 4
	} else {
		// A log axis needs a positive range even with nothing to show.
		p99.Y.Min, p99.Y.Max = 1, 10
	}
	return savePNG(path, rate, p99)
}

func newRatePlot() *plot.Plot {
	p := plot.New()
	p.Title.Text = "Completed posts per second"
	p.X.Label.Text = "seconds since the path's run started"
	p.Y.Label.Text = "posts/s"
	p.Y.Min = 0
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return p
}

func newP99Plot() *plot.Plot {
	p := plot.New()
	p.Title.Text = "p99 latency of POST /v1/drafts/{id}/post (1 s buckets)"
	p.X.Label.Text = "seconds since the path's run started"
	p.Y.Label.Text = "ms (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = logTicks{}
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return p
}

// extent is the largest values drawn, for the axes' ranges.
type extent struct{ rate, p99, x float64 }

// addPathLines draws r's completed posts/s on rate and its Post p99 on
// p99 (seconds without a Post left out), in colour c.
func addPathLines(rate, p99 *plot.Plot, r *Result, c color.RGBA, ext *extent) error {
	var pr, pl plotter.XYs
	for _, s := range r.Series {
		x := float64(s.Second) + 0.5
		ext.x = max(ext.x, x+0.5)
		pr = append(pr, plotter.XY{X: x, Y: float64(s.Completed)})
		ext.rate = max(ext.rate, float64(s.Completed))
		if s.PostRequests > 0 && s.PostP99Ms > 0 {
			pl = append(pl, plotter.XY{X: x, Y: s.PostP99Ms})
			ext.p99 = max(ext.p99, s.PostP99Ms)
		}
	}
	add := func(p *plot.Plot, xys plotter.XYs, label string) error {
		if len(xys) == 0 {
			return nil
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return err
		}
		l.Color, l.Width = c, vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(label, l)
		return nil
	}
	if err := add(rate, pr, fmt.Sprintf("%s (%.0f posts/s)", r.Path, r.PostsPerSec)); err != nil {
		return err
	}
	return add(p99, pl, fmt.Sprintf("%s (run p99 %.1f ms)", r.Path, r.Latency["post"].P99))
}

// savePNG draws the plots one above the other into a PNG file at path.
func savePNG(path string, plots ...*plot.Plot) error {
	return saveGridPNG(path, 10*vg.Inch, 8*vg.Inch, 1, plots...)
}

// saveGridPNG draws the plots in rows of cols, w by h in all, into a PNG
// file at path.
func saveGridPNG(path string, w, h vg.Length, cols int, plots ...*plot.Plot) error {
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(110), vgimg.UseBackgroundColor(color.White))
	dc := draw.New(img)
	rows := (len(plots) + cols - 1) / cols
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadTop: vg.Points(6), PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(12),
		PadX: vg.Points(18), PadY: vg.Points(18)}
	grid := make([][]*plot.Plot, rows)
	for i := range grid {
		grid[i] = make([]*plot.Plot, cols)
	}
	for i, p := range plots {
		grid[i/cols][i%cols] = p
	}
	canvases := plot.Align(grid, tiles, dc)
	for i, p := range plots {
		p.Draw(canvases[i/cols][i%cols])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// logTicks labels 1, 2 and 5 times each power of ten, so a log axis shows
// readable milliseconds over any range.
type logTicks struct{}

func (logTicks) Ticks(min, max float64) []plot.Tick {
	var ts []plot.Tick
	for p := math.Pow(10, math.Floor(math.Log10(min))); p <= max; p *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := p * m
			if v < min || v > max {
				continue
			}
			ts = append(ts, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
		}
		for m := 2.0; m < 10; m++ {
			if v := p * m; v >= min && v <= max && m != 2 && m != 5 {
				ts = append(ts, plot.Tick{Value: v})
			}
		}
	}
	return ts
}
