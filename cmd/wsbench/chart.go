package main

import (
	"fmt"
	"image/color"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Bar colours: the first series and the second of a pair.
var (
	barColor  = color.RGBA{R: 0x2b, G: 0x6c, B: 0xb0, A: 0xff}
	barColor2 = color.RGBA{R: 0xe0, G: 0x7b, B: 0x28, A: 0xff}
)

// drawChart draws the medians as a PNG of two panels: throughput at the
// maximum rate and latency at the fixed rate for pub/sub runs, memory per
// connection and handshake latency for conns runs.
func drawChart(path, title string, groups []rateGroup, conns []connsSummary) error {
	var left, right *plot.Plot
	var err error
	oneSystem := len(groups) > 1
	for _, g := range groups {
		oneSystem = oneSystem && len(g.sums) == 1
	}
	switch {
	case oneSystem:
		// One system at several rates (SSE fan-out): a bar per rate.
		labels := make([]string, len(groups))
		for i, g := range groups {
			labels[i] = fmt.Sprintf("%s @ %.0f/s", g.sums[0].label, g.rate)
		}
		left, err = bars(title+": deliveries/s", "delivered msgs/s (median)", labels, func(i int) (float64, float64) { return groups[i].sums[0].msgsPerSec, -1 })
		if err != nil {
			return err
		}
		right, err = bars(title+": latency", "ms (median of runs)", labels, func(i int) (float64, float64) {
			return groups[i].sums[0].p50 / 1e3, groups[i].sums[0].p99 / 1e3
		}, "p50", "p99")
	case len(groups) > 0:
		tp, lat := groups[0], groups[len(groups)-1] // rates sorted: 0 (max) first
		left, err = bars(title+": msgs/s", "delivered msgs/s (median)", labelsOf(tp.sums), func(i int) (float64, float64) { return tp.sums[i].msgsPerSec, -1 })
		if err != nil {
			return err
		}
		what := "as fast as possible"
		if lat.rate > 0 {
			what = fmt.Sprintf("at %.0f msg/s", lat.rate)
		}
		right, err = bars(title+": latency "+what, "ms (median of runs)", labelsOf(lat.sums), func(i int) (float64, float64) {
			return lat.sums[i].p50 / 1e3, lat.sums[i].p99 / 1e3
		}, "p50", "p99")
	default:
		labels := make([]string, len(conns))
		for i, s := range conns {
			labels[i] = s.label
		}
		left, err = bars(title+": memory per idle connection", "KB of server RSS per connection", labels, func(i int) (float64, float64) {
			gc := conns[i].perConnGC / 1000
			if gc == 0 {
				gc = -1
			}
			return conns[i].perConn / 1000, gc
		}, "as held", "after a GC")
		if err != nil {
			return err
		}
		right, err = bars(title+": handshake", "ms", labels, func(i int) (float64, float64) { return conns[i].p50 / 1e3, conns[i].p99 / 1e3 }, "p50", "p99")
	}
	if err != nil {
		return err
	}
	img := vgimg.New(vg.Points(960), vg.Points(380))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Points(24), PadTop: vg.Points(8), PadBottom: vg.Points(8), PadLeft: vg.Points(8), PadRight: vg.Points(8)}
	canvases := plot.Align([][]*plot.Plot{{left, right}}, tiles, dc)
	left.Draw(canvases[0][0])
	right.Draw(canvases[0][1])
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

func labelsOf(sums []summary) []string {
	out := make([]string, len(sums))
	for i, s := range sums {
		out[i] = s.label
	}
	return out
}

// bars is a bar chart with one bar per label, or two side by side where
// value returns a second value that is not negative; names name the two
// in the legend. Each bar carries its value.
func bars(title, yLabel string, labels []string, value func(i int) (float64, float64), names ...string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = yLabel
	p.Add(plotter.NewGrid())
	first, second := make(plotter.Values, len(labels)), make(plotter.Values, len(labels))
	missing := make([]bool, len(labels)) // no second value: no bar, no label
	paired, top := false, 0.0
	for i := range labels {
		first[i], second[i] = value(i)
		if second[i] >= 0 {
			paired = true
		} else {
			second[i], missing[i] = 0, true
		}
		top = max(top, first[i], second[i])
	}
	p.Y.Min, p.Y.Max = 0, top*1.15
	width := vg.Points(36)
	if paired {
		width = vg.Points(20)
	}
	b1, err := plotter.NewBarChart(first, width)
	if err != nil {
		return nil, err
	}
	b1.Color, b1.LineStyle.Width = barColor, 0
	p.Add(b1)
	series, offsets := []plotter.Values{first}, []vg.Length{0}
	if paired {
		b2, err := plotter.NewBarChart(second, width)
		if err != nil {
			return nil, err
		}
		b2.Color, b2.LineStyle.Width = barColor2, 0
		b1.Offset, b2.Offset = -width/2, width/2
		p.Add(b2)
		series, offsets = append(series, second), []vg.Length{-width / 2, width / 2}
		if len(names) == 2 {
			p.Legend.Add(names[0], b1)
			p.Legend.Add(names[1], b2)
			p.Legend.Top = true
		}
	}
	for k, vs := range series {
		var xys plotter.XYLabels
		for i, v := range vs {
			label := valueLabel(v)
			if k == 1 && missing[i] {
				label = ""
			}
			xys.XYs = append(xys.XYs, plotter.XY{X: float64(i), Y: v})
			xys.Labels = append(xys.Labels, label)
		}
		l, err := plotter.NewLabels(xys)
		if err != nil {
			return nil, err
		}
		l.Offset.X = offsets[k]
		for i := range l.TextStyle {
			l.TextStyle[i].XAlign, l.TextStyle[i].YAlign = draw.XCenter, draw.YBottom
		}
		p.Add(l)
	}
	p.NominalX(labels...)
	return p, nil
}

// valueLabel prints a bar's value with the precision it needs.
func valueLabel(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}
