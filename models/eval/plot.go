package eval

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Plot size and resolution of the PNG files.
const (
	plotWidth  = 7 * vg.Inch
	plotHeight = 5 * vg.Inch
	// maxStep is the smallest move, in either axis, between two plotted
	// points of a curve: a curve with a million distinct scores is drawn
	// with a few thousand points, which the eye cannot tell apart.
	maxStep = 1e-3
	// scoreBins is the number of bins of the score histogram.
	scoreBins = 50
)

var (
	colorGenuine = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	colorFraud   = color.RGBA{R: 214, G: 39, B: 40, A: 255}
	colorChance  = color.RGBA{R: 150, G: 150, B: 150, A: 255}
	colorReview  = color.RGBA{R: 255, G: 127, B: 14, A: 255}
	colorAlert   = color.RGBA{R: 148, G: 0, B: 211, A: 255}
)

// WriteROC writes the ROC curve as a PNG image with the false positive
// rate on a log axis (from the power of ten at or below half of one
// genuine transaction's share, at most 10⁻⁶, to 1): the operating points of
// fraud teams alert well under 1% of the genuine transactions, which a
// linear axis squeezes against the left edge. It draws the curve, the
// chance line (recall = false positive rate) and the thresholds.
func (r *Result) WriteROC(w io.Writer) error {
	p := plot.New()
	m := &r.Metrics
	p.Title.Text = fmt.Sprintf("ROC — %s (AUC %s, %d tx, %d fraud)", m.Model, fmtFloat(m.ROCAUC), m.Transactions, m.Fraud)
	p.X.Label.Text = "false positive rate (log scale)"
	p.Y.Label.Text = "true positive rate (recall)"
	lo := 1e-6
	if m.Genuine > 0 {
		lo = math.Max(lo, math.Pow(10, math.Floor(math.Log10(0.5/float64(m.Genuine)))))
	}
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = lo, 1, 0, 1
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = powerTicks{}
	p.Add(plotter.NewGrid())
	var diag plotter.XYs
	for e := math.Log10(lo); e <= 0; e += 0.05 {
		diag = append(diag, plotter.XY{X: math.Pow(10, e), Y: math.Pow(10, e)})
	}
	diag = append(diag, plotter.XY{X: 1, Y: 1})
	chance, err := plotter.NewLine(diag)
	if err != nil {
		return fmt.Errorf("plot roc: %w", err)
	}
	chance.Color, chance.Dashes = colorChance, []vg.Length{vg.Points(4), vg.Points(4)}
	p.Add(chance)
	p.Legend.Add("chance", chance)
	if len(r.ROC) > 0 {
		l, err := plotter.NewLine(thinLogX(r.ROC, lo))
		if err != nil {
			return fmt.Errorf("plot roc: %w", err)
		}
		l.Color, l.Width = colorGenuine, vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(m.Model, l)
	}
	for _, c := range m.Thresholds {
		if math.IsNaN(float64(c.Recall)) || m.Genuine == 0 {
			continue
		}
		if err := addMark(p, c, math.Max(float64(c.FalsePositives)/float64(m.Genuine), lo), float64(c.Recall)); err != nil {
			return fmt.Errorf("plot roc: %w", err)
		}
	}
	p.Legend.Top, p.Legend.Left = false, false
	return writePNG(p, w, "roc")
}

// thinLogX is thin for a log x axis: x is clamped at lo (a log axis has no
// 0) and points are kept when they move at least maxStep in y or 0.005 in
// log10(x).
func thinLogX(pts []Point, lo float64) plotter.XYs {
	out := make(plotter.XYs, 0, min(len(pts), 4096))
	for i, pt := range pts {
		x := math.Max(pt.X, lo)
		if i > 0 && i < len(pts)-1 {
			last := out[len(out)-1]
			if math.Abs(math.Log10(x)-math.Log10(last.X)) < 0.005 && math.Abs(pt.Y-last.Y) < maxStep {
				continue
			}
		}
		out = append(out, plotter.XY{X: x, Y: pt.Y})
	}
	return out
}

// WriteMoney writes the money and operations view as a PNG image: recall
// and dollar-weighted recall (share of the fraud amount alerted) against
// alerts a day on a log axis, one point per distinct threshold, with the
// review and alert thresholds and the alert budget (when known) marked.
// Without amounts in the records only the recall is drawn.
func (r *Result) WriteMoney(w io.Writer) error {
	p := plot.New()
	m := &r.Metrics
	title := fmt.Sprintf("Alerts a day and what they catch — %s", m.Model)
	if !math.IsNaN(float64(m.Money.FraudAmount)) {
		title += fmt.Sprintf(" (fraud amount %.0f)", float64(m.Money.FraudAmount))
	}
	p.Title.Text = title
	p.X.Label.Text = fmt.Sprintf("alerts a day (log scale, %d days)", len(m.Days))
	p.Y.Label.Text = "share of fraud alerted"
	perDay, recall, amountRecall, _ := r.ops.moneyCurve()
	lo := 1 / float64(max(len(m.Days), 1))
	lo = math.Pow(10, math.Floor(math.Log10(lo)))
	hi := math.Pow(10, math.Ceil(math.Log10(math.Max(perDay[len(perDay)-1], 10*lo))))
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = lo, hi, 0, 1
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = powerTicks{}
	p.Add(plotter.NewGrid())
	for _, cv := range []struct {
		name string
		y    []float64
		col  color.Color
	}{{"recall (transactions)", recall, colorGenuine}, {"dollar recall (fraud amount)", amountRecall, colorFraud}} {
		if math.IsNaN(cv.y[0]) {
			continue
		}
		pts := make([]Point, len(perDay))
		for i := range perDay {
			pts[i] = Point{perDay[i], cv.y[i]}
		}
		l, err := plotter.NewLine(thinLogX(pts, lo))
		if err != nil {
			return fmt.Errorf("plot money: %w", err)
		}
		l.Color, l.Width = cv.col, vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(cv.name, l)
	}
	for _, c := range m.Thresholds {
		if math.IsNaN(float64(c.Recall)) || c.Alerted == 0 {
			continue
		}
		if err := addMark(p, c, math.Max(float64(c.AlertsPerDay), lo), float64(c.Recall)); err != nil {
			return fmt.Errorf("plot money: %w", err)
		}
	}
	if b := m.AlertBudget; b != nil && !math.IsNaN(float64(b.PerDay)) && float64(b.PerDay) >= lo && float64(b.PerDay) <= hi {
		l, err := plotter.NewLine(plotter.XYs{{X: float64(b.PerDay), Y: 0}, {X: float64(b.PerDay), Y: 1}})
		if err != nil {
			return fmt.Errorf("plot money: %w", err)
		}
		l.Color, l.Dashes = colorAlert, []vg.Length{vg.Points(3), vg.Points(3)}
		p.Add(l)
		p.Legend.Add("alert budget "+b.Budget, l)
	}
	p.Legend.Top, p.Legend.Left = false, false
	p.Legend.YOffs = vg.Points(12)
	return writePNG(p, w, "money")
}

// WriteAlertsPerDay writes each day's alerts and reviews as a PNG image,
// with the alert budget (when known, per day) as a line: what the team
// would have received.
func (r *Result) WriteAlertsPerDay(w io.Writer) error {
	p := plot.New()
	m := &r.Metrics
	p.Title.Text = fmt.Sprintf("Alerts and reviews per day — %s", m.Model)
	p.X.Label.Text = "day"
	p.Y.Label.Text = "transactions"
	p.Add(plotter.NewGrid())
	var alerts, reviews, fraud plotter.XYs
	ymax := 1.0
	for i, d := range m.Days {
		alerts = append(alerts, plotter.XY{X: float64(i), Y: float64(d.Alerts)})
		reviews = append(reviews, plotter.XY{X: float64(i), Y: float64(d.Reviews)})
		fraud = append(fraud, plotter.XY{X: float64(i), Y: float64(d.AlertFraud)})
		ymax = math.Max(ymax, float64(d.Reviews))
	}
	for _, s := range []struct {
		name string
		xy   plotter.XYs
		col  color.Color
	}{{"review or alert", reviews, colorReview}, {"alert", alerts, colorAlert}, {"fraud among alerts", fraud, colorFraud}} {
		if len(s.xy) == 0 {
			continue
		}
		l, err := plotter.NewLine(s.xy)
		if err != nil {
			return fmt.Errorf("plot alerts per day: %w", err)
		}
		l.Color, l.Width = s.col, vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(s.name, l)
	}
	if b := m.AlertBudget; b != nil && !math.IsNaN(float64(b.PerDay)) && len(m.Days) > 0 {
		l, err := plotter.NewLine(plotter.XYs{{X: 0, Y: float64(b.PerDay)}, {X: float64(len(m.Days) - 1), Y: float64(b.PerDay)}})
		if err != nil {
			return fmt.Errorf("plot alerts per day: %w", err)
		}
		l.Color, l.Dashes = colorChance, []vg.Length{vg.Points(4), vg.Points(4)}
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("alert budget %s (%d days over)", b.Budget, b.DaysOver), l)
		ymax = math.Max(ymax, float64(b.PerDay))
	}
	p.Y.Min, p.Y.Max = 0, ymax*1.15
	p.X.Tick.Marker = dayTicks(m.Days)
	p.Legend.Top, p.Legend.Left = true, true
	return writePNG(p, w, "alerts per day")
}

// powerTicks labels a log axis with the powers of ten in its range, and
// puts minor ticks at 2..9 times each.
type powerTicks struct{}

func (powerTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		v := math.Pow(10, e)
		if v >= lo*(1-1e-9) && v <= hi*(1+1e-9) {
			ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
		}
		for k := 2; k < 10; k++ {
			if m := float64(k) * v; m > lo && m < hi {
				ticks = append(ticks, plot.Tick{Value: m})
			}
		}
	}
	return ticks
}

// dayTicks labels a day axis with about 8 dates.
type dayTicks []DayOps

func (d dayTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	step := max(1, len(d)/8)
	for i := 0; i < len(d); i += step {
		ticks = append(ticks, plot.Tick{Value: float64(i), Label: d[i].Day[5:]})
	}
	return ticks
}

// WritePR writes the precision-recall curve as a PNG image, as steps (the
// area under them is the average precision), with the base rate (the
// precision of chance) and the operating points of the thresholds.
func (r *Result) WritePR(w io.Writer) error {
	p := plot.New()
	m := &r.Metrics
	p.Title.Text = fmt.Sprintf("Precision-recall — %s (AP %s, base rate %s)", m.Model, fmtFloat(m.AveragePrecision), fmtFloat(m.BaseRate))
	p.X.Label.Text = "recall"
	p.Y.Label.Text = "precision"
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = 0, 1, 0, 1
	p.Add(plotter.NewGrid())
	base, err := plotter.NewLine(plotter.XYs{{X: 0, Y: float64(m.BaseRate)}, {X: 1, Y: float64(m.BaseRate)}})
	if err != nil {
		return fmt.Errorf("plot pr: %w", err)
	}
	base.Color, base.Dashes = colorChance, []vg.Length{vg.Points(4), vg.Points(4)}
	p.Add(base)
	p.Legend.Add("chance (base rate)", base)
	if len(r.PR) > 0 {
		pts := append([]Point{{0, r.PR[0].Y}}, r.PR...)
		l, err := plotter.NewLine(thin(pts))
		if err != nil {
			return fmt.Errorf("plot pr: %w", err)
		}
		l.StepStyle = plotter.PreStep // precision P_i holds over (R_{i-1}, R_i]
		l.Color, l.Width = colorGenuine, vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(m.Model, l)
	}
	for _, c := range m.Thresholds {
		if math.IsNaN(float64(c.Recall)) || math.IsNaN(float64(c.Precision)) {
			continue
		}
		if err := addMark(p, c, float64(c.Recall), float64(c.Precision)); err != nil {
			return fmt.Errorf("plot pr: %w", err)
		}
	}
	p.Legend.Top, p.Legend.Left = false, true // a useful model's curve stays away from low recall and precision
	p.Legend.YOffs = vg.Points(12)            // above the base-rate line
	return writePNG(p, w, "pr")
}

// WriteScores writes the score distributions of genuine and fraudulent
// transactions as a PNG image: per class, the share of its transactions in
// each of 50 equal-width score bins, on a log scale (an empty bin drops to
// the bottom of the axis), with the thresholds as vertical lines.
func (r *Result) WriteScores(w io.Writer) error {
	p := plot.New()
	m := &r.Metrics
	p.Title.Text = fmt.Sprintf("Score distribution by label — %s", m.Model)
	p.X.Label.Text = "score"
	p.Y.Label.Text = "share of the class's transactions"

	lo, hi := slices.Min(r.scores), slices.Max(r.scores)
	if lo >= 0 && hi <= 1 {
		lo, hi = 0, 1 // a probability: show the whole range
	}
	if hi <= lo {
		lo, hi = lo-0.5, hi+0.5
	}
	width := (hi - lo) / scoreBins
	var counts [2][scoreBins]int
	var totals [2]int
	for i, s := range r.scores {
		b := min(int((s-lo)/width), scoreBins-1)
		c := 0
		if r.fraud[i] {
			c = 1
		}
		counts[c][max(b, 0)]++
		totals[c]++
	}
	// The y axis shows log10 of the share, from the power of ten at or below
	// half the smallest non-zero share (where empty bins are drawn) to 1.
	floor := 0.0
	for c := range counts {
		for _, n := range counts[c] {
			if n > 0 {
				floor = min(floor, math.Floor(math.Log10(float64(n)/float64(totals[c])/2)))
			}
		}
	}
	floor = min(floor, -1)
	p.Y.Min, p.Y.Max = floor, 0
	p.Y.Tick.Marker = log10Ticks{}
	p.X.Min, p.X.Max = lo, hi
	for c, name := range [2]string{"genuine", "fraud"} {
		if totals[c] == 0 {
			continue
		}
		xy := make(plotter.XYs, 0, scoreBins+1)
		for b, n := range counts[c] {
			y := floor
			if n > 0 {
				y = math.Log10(float64(n) / float64(totals[c]))
			}
			xy = append(xy, plotter.XY{X: lo + float64(b)*width, Y: y})
		}
		xy = append(xy, plotter.XY{X: hi, Y: xy[len(xy)-1].Y})
		l, err := plotter.NewLine(xy)
		if err != nil {
			return fmt.Errorf("plot scores: %w", err)
		}
		l.StepStyle = plotter.PostStep
		l.Width = vg.Points(1.5)
		l.Color = colorGenuine
		if c == 1 {
			l.Color = colorFraud
		}
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s (%d)", name, totals[c]), l)
	}
	for _, c := range m.Thresholds {
		if c.Threshold < lo || c.Threshold > hi {
			continue
		}
		l, err := plotter.NewLine(plotter.XYs{{X: c.Threshold, Y: floor}, {X: c.Threshold, Y: 0}})
		if err != nil {
			return fmt.Errorf("plot scores: %w", err)
		}
		l.Color, l.Dashes = markColor(c.Name), []vg.Length{vg.Points(3), vg.Points(3)}
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s ≥ %.4g", c.Name, c.Threshold), l)
	}
	p.Legend.Top = true
	p.Legend.XOffs = -plotWidth / 4 // between the genuine peak (left) and the fraud peak (right)
	return writePNG(p, w, "scores")
}

// log10Ticks labels an axis of log10 values with powers of ten, and puts
// minor ticks at 2..9 times each.
type log10Ticks struct{}

func (log10Ticks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for e := math.Floor(lo); e <= hi; e++ {
		ticks = append(ticks, plot.Tick{Value: e, Label: strconv.FormatFloat(math.Pow(10, e), 'g', -1, 64)})
		for k := 2; k < 10 && e+math.Log10(float64(k)) < hi; k++ {
			ticks = append(ticks, plot.Tick{Value: e + math.Log10(float64(k))})
		}
	}
	return ticks
}

// addMark draws the operating point of a threshold at (x, y).
func addMark(p *plot.Plot, c Cut, x, y float64) error {
	s, err := plotter.NewScatter(plotter.XYs{{X: x, Y: y}})
	if err != nil {
		return err
	}
	s.GlyphStyle.Color = markColor(c.Name)
	s.GlyphStyle.Radius = vg.Points(4)
	s.GlyphStyle.Shape = draw.CircleGlyph{}
	if c.Name == "alert" {
		s.GlyphStyle.Shape = draw.SquareGlyph{}
	}
	p.Add(s)
	p.Legend.Add(fmt.Sprintf("%s ≥ %.4g: P %s R %s", c.Name, c.Threshold, fmtFloat(c.Precision), fmtFloat(c.Recall)), s)
	return nil
}

func markColor(name string) color.Color {
	if name == "alert" {
		return colorAlert
	}
	return colorReview
}

// thin returns the points of a curve that move at least maxStep away from
// the last one kept, in either axis, and always the first and last.
func thin(pts []Point) plotter.XYs {
	out := make(plotter.XYs, 0, min(len(pts), 4096))
	for i, pt := range pts {
		if i > 0 && i < len(pts)-1 {
			last := out[len(out)-1]
			if math.Abs(pt.X-last.X) < maxStep && math.Abs(pt.Y-last.Y) < maxStep {
				continue
			}
		}
		out = append(out, plotter.XY{X: pt.X, Y: pt.Y})
	}
	return out
}

func writePNG(p *plot.Plot, w io.Writer, what string) error {
	wt, err := p.WriterTo(plotWidth, plotHeight, "png")
	if err != nil {
		return fmt.Errorf("render %s plot: %w", what, err)
	}
	if _, err := wt.WriteTo(w); err != nil {
		return fmt.Errorf("write %s plot: %w", what, err)
	}
	return nil
}

// fmtFloat formats a metric with 4 significant digits, "n/a" when undefined.
func fmtFloat(f Float) string {
	if math.IsNaN(float64(f)) {
		return "n/a"
	}
	return fmt.Sprintf("%.4g", float64(f))
}
