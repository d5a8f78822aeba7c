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
// (top) and the p99 latency of Post requests (bottom, log scale).
func (rep *Report) WritePNG(path string) error {
	rate := plot.New()
	rate.Title.Text = "Completed posts per second"
	rate.X.Label.Text = "seconds since the path's run started"
	rate.Y.Label.Text = "posts/s"
	rate.Y.Min = 0
	rate.Legend.Top = true
	rate.Add(plotter.NewGrid())

	p99 := plot.New()
	p99.Title.Text = "p99 latency of POST /v1/drafts/{id}/post (1 s buckets)"
	p99.X.Label.Text = "seconds since the path's run started"
	p99.Y.Label.Text = "ms (log scale)"
	p99.Y.Scale = plot.LogScale{}
	p99.Y.Tick.Marker = logTicks{}
	p99.Legend.Top = true
	p99.Add(plotter.NewGrid())

	anyLatency := false
	var maxRate, maxP99, maxX float64
	for i, r := range rep.Results {
		var pr, pl plotter.XYs
		for _, s := range r.Series {
			x := float64(s.Second) + 0.5
			maxX = max(maxX, x+0.5)
			pr = append(pr, plotter.XY{X: x, Y: float64(s.Completed)})
			maxRate = max(maxRate, float64(s.Completed))
			if s.PostRequests > 0 && s.PostP99Ms > 0 {
				pl = append(pl, plotter.XY{X: x, Y: s.PostP99Ms})
				maxP99 = max(maxP99, s.PostP99Ms)
			}
		}
		c := pathColors[i%len(pathColors)]
		label := fmt.Sprintf("%s (%.0f posts/s)", r.Path, r.PostsPerSec)
		if len(pr) > 0 {
			l, err := plotter.NewLine(pr)
			if err != nil {
				return err
			}
			l.Color, l.Width = c, vg.Points(1.5)
			rate.Add(l)
			rate.Legend.Add(label, l)
		}
		if len(pl) > 0 {
			anyLatency = true
			l, err := plotter.NewLine(pl)
			if err != nil {
				return err
			}
			l.Color, l.Width = c, vg.Points(1.5)
			p99.Add(l)
			p99.Legend.Add(fmt.Sprintf("%s (run p99 %.1f ms)", r.Path, r.Latency["post"].P99), l)
		}
	}
	// Room above the lines for the legend.
	rate.Y.Max = max(1, maxRate) * 1.3
	rate.X.Min, p99.X.Min = 0, 0
	rate.X.Max, p99.X.Max = max(maxX, 1), max(maxX, 1)
	if anyLatency {
		p99.Y.Max = maxP99 * 4
	} else {
		// A log axis needs a positive range even with nothing to show.
		p99.Y.Min, p99.Y.Max = 1, 10
	}

	const w, h = 10 * vg.Inch, 8 * vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(110), vgimg.UseBackgroundColor(color.White))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Points(6), PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(12), PadY: vg.Points(18)}
	plots := [][]*plot.Plot{{rate}, {p99}}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
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
