package train

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/streamscore/streamscore/models"
)

// TestGBDTLearnsNonLinear: on the xor problem GBDT beats logistic
// regression by far in AP and AUC on fresh rows, and its validation
// metrics are recorded.
func TestGBDTLearnsNonLinear(t *testing.T) {
	ctx := context.Background()
	tr, test := xor(20000, 3), xor(5000, 4)
	f, err := GBDT(ctx, "fraud_gbdt", 1, tr, WithSeed(5), WithTrees(200), WithMaxDepth(4))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := encodeParse(t, f)
	mt, err := Evaluate(m, test)
	if err != nil {
		t.Fatal(err)
	}
	lf, err := Logistic(ctx, "lr", 1, tr)
	if err != nil {
		t.Fatal(err)
	}
	lm, _ := encodeParse(t, lf)
	lmt, _ := Evaluate(lm, test)
	if mt.AUC < 0.97 || mt.AP < lmt.AP+0.3 {
		t.Errorf("gbdt AUC %.4f AP %.4f, logistic AUC %.4f AP %.4f: want gbdt AUC > 0.97 and AP well above logistic", mt.AUC, mt.AP, lmt.AUC, lmt.AP)
	}
	if f.Training["trees"].(int) < 1 || f.Training["validation"] == nil {
		t.Errorf("training metadata: %v", f.Training)
	}
}

// TestGBDTDeterministic: the same seed gives the same bytes whatever
// GOMAXPROCS is; another seed (other row and feature draws) differs.
func TestGBDTDeterministic(t *testing.T) {
	ctx := context.Background()
	d := separable(12000, 6) // > 4096 rows per node at the top: the parallel build runs
	fit := func(seed int64) []byte {
		f, err := GBDT(ctx, "g", 1, d, WithSeed(seed), WithTrees(20), WithMaxDepth(4))
		if err != nil {
			t.Fatal(err)
		}
		_, b := encodeParse(t, f)
		return b
	}
	first := fit(7)
	prev := runtime.GOMAXPROCS(1)
	one := fit(7)
	runtime.GOMAXPROCS(prev)
	if !bytes.Equal(first, one) {
		t.Fatal("seed 7 differs between GOMAXPROCS 1 and the default")
	}
	if bytes.Equal(first, fit(8)) {
		t.Fatal("seeds 7 and 8 give the same model")
	}
}

// TestGBDTLimits: depth and leaf limits and min child weight hold in
// every tree, and the trees' thresholds score raw rows as training's bins
// did: the held-out log loss training recorded from its bin-walked
// margins equals the parsed model's on the raw rows.
func TestGBDTLimits(t *testing.T) {
	ctx := context.Background()
	d := separable(6000, 2)
	// Coarse values: held-out rows equal cut points, so a training/scoring
	// disagreement on ties (x == threshold goes right) would show.
	for i, v := range d.X {
		d.X[i] = float32(math.Round(float64(v)*4) / 4)
	}
	f, err := GBDT(ctx, "g", 1, d, WithTrees(30), WithMaxDepth(5), WithMaxLeaves(7), WithMinChildWeight(3), WithSubsample(1, 1))
	if err != nil {
		t.Fatal(err)
	}
	for i, tr := range f.Trees.Trees {
		leaves := 0
		for j, ft := range tr.Feature {
			if ft < 0 {
				leaves++
				if tr.Cover[j] < 3 {
					t.Fatalf("tree %d leaf %d: cover %v < min child weight 3", i, j, tr.Cover[j])
				}
			}
		}
		if leaves > 7 {
			t.Fatalf("tree %d: %d leaves > 7", i, leaves)
		}
		if dep := depth(&tr, 0); dep > 5 {
			t.Fatalf("tree %d: depth %d > 5", i, dep)
		}
	}
	m, _ := encodeParse(t, f)
	nt := d.Rows() - int(math.Round(float64(d.Rows())*0.2))
	valid := &Dataset{Names: d.Names, X: d.X[nt*len(d.Names):], Y: d.Y[nt:]}
	scores, err := Predict(m, valid)
	if err != nil {
		t.Fatal(err)
	}
	var loss float64
	for i, s := range scores {
		p := min(max(float64(s), 1e-15), 1-1e-15)
		y := float64(valid.Y[i])
		loss -= y*math.Log(p) + (1-y)*math.Log(1-p)
	}
	loss /= float64(len(scores))
	if rec := f.Training["validation_loss"].(float64); math.Abs(rec-loss) > 1e-5*rec {
		t.Fatalf("recorded validation loss %v, parsed model on raw rows %v", rec, loss)
	}
	if m.Family() != models.FamilyGBDT {
		t.Fatalf("family %s", m.Family())
	}
}

func depth(t *models.Tree, n int32) int {
	if t.Feature[n] < 0 {
		return 0
	}
	return 1 + max(depth(t, t.Left[n]), depth(t, t.Right[n]))
}

// BenchmarkGBDT fits 20 rounds of depth-6 trees on 300,000 rows × 39
// features (a nonlinear problem, 1% positives).
func BenchmarkGBDT(b *testing.B) {
	d := wide300k()
	b.ResetTimer()
	for b.Loop() {
		if _, err := GBDT(context.Background(), "g", 1, d, WithTrees(20), WithPatience(100)); err != nil {
			b.Fatal(err)
		}
	}
}

func wide300k() *Dataset {
	const rows, cols = 300_000, 39
	r := rand.New(rand.NewPCG(3, 3))
	d := &Dataset{}
	for j := range cols {
		d.Names = append(d.Names, fmt.Sprintf("f%02d", j))
	}
	row := make([]float32, cols)
	for range rows {
		for j := range row {
			row[j] = float32(r.NormFloat64())
		}
		row[5] = float32(math.Round(float64(row[5]) * 2)) // few distinct values
		s := row[0]*row[1] + float32(math.Sin(float64(row[2])*2)) + 0.5*row[3] - 3.5
		var y float32
		if r.Float64() < 1/(1+math.Exp(-float64(s))) {
			y = 1
		}
		d.Append(row, y)
	}
	return d
}
