package bench

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

type panel struct {
	title   string
	metrics []Metric
}

// panels groups the metrics of each scenario by unit: one chart per group,
// so bars on one axis always share a unit.
func (r *Report) panels() []panel {
	var out []panel
	for _, s := range r.Scenarios {
		idx := map[string]int{}
		for _, m := range s.Metrics {
			if len(m.Values) == 0 {
				continue
			}
			i, ok := idx[m.Unit]
			if !ok {
				i = len(out)
				idx[m.Unit] = i
				out = append(out, panel{title: fmt.Sprintf("%s (%s)", s.Name, m.Unit)})
			}
			out[i].metrics = append(out[i].metrics, m)
		}
	}
	return out
}

// Plot draws every scenario's medians as horizontal bars with min-max
// whiskers, one panel per scenario and unit, into a PNG file.
func (r *Report) Plot(path string) error {
	ps := r.panels()
	if len(ps) == 0 {
		return fmt.Errorf("bench: nothing was measured, no chart to draw")
	}
	const width = 9 * vg.Inch
	heights := make([]vg.Length, len(ps))
	var total vg.Length
	for i, p := range ps {
		heights[i] = vg.Length(1.2+0.32*float64(len(p.metrics))) * vg.Inch
		total += heights[i]
	}
	img := vgimg.New(width, total)
	dc := draw.New(img)
	top := total
	for i, p := range ps {
		pl, err := barPlot(p)
		if err != nil {
			return err
		}
		band := vg.Rectangle{Min: vg.Point{X: 0, Y: top - heights[i]}, Max: vg.Point{X: width, Y: top}}
		pl.Draw(draw.Canvas{Canvas: dc.Canvas, Rectangle: band})
		top -= heights[i]
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

func barPlot(p panel) (*plot.Plot, error) {
	pl := plot.New()
	pl.Title.Text = p.title
	n := len(p.metrics)
	vals := make(plotter.Values, n)
	names := make([]string, n)
	errs := make(plotter.XYs, n)
	lo := make(plotter.YErrors, n)
	for i, m := range p.metrics {
		// Bars are drawn bottom-up; list the first metric at the top.
		j := n - 1 - i
		vals[j] = m.Median
		names[j] = m.Name
		errs[j] = plotter.XY{X: m.Median, Y: float64(j)}
		lo[j].Low, lo[j].High = m.Median-m.Min, m.Max-m.Median
	}
	bars, err := plotter.NewBarChart(vals, vg.Points(12))
	if err != nil {
		return nil, err
	}
	bars.Horizontal = true
	bars.Color = color.RGBA{R: 70, G: 120, B: 190, A: 255}
	bars.LineStyle.Width = 0
	pl.Add(bars)
	whisk := &xErrBars{XYs: errs, lows: lo}
	pl.Add(whisk)
	pl.NominalY(names...)
	pl.X.Min = 0
	pl.X.Label.Text = "median, whiskers min-max"
	return pl, nil
}

// xErrBars draws horizontal min-max whiskers at each bar.
type xErrBars struct {
	plotter.XYs
	lows plotter.YErrors
}

func (e *xErrBars) Plot(c draw.Canvas, p *plot.Plot) {
	tx, ty := p.Transforms(&c)
	ls := draw.LineStyle{Color: color.Black, Width: vg.Points(1)}
	for i, xy := range e.XYs {
		y := ty(xy.Y)
		x0, x1 := tx(xy.X-e.lows[i].Low), tx(xy.X+e.lows[i].High)
		c.StrokeLine2(ls, x0, y, x1, y)
		c.StrokeLine2(ls, x0, y-vg.Points(3), x0, y+vg.Points(3))
		c.StrokeLine2(ls, x1, y-vg.Points(3), x1, y+vg.Points(3))
	}
}

func (e *xErrBars) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmin, ymin = 0, 0
	for i, xy := range e.XYs {
		xmax = max(xmax, xy.X+e.lows[i].High)
		ymax = max(ymax, xy.Y)
	}
	return
}
