package gbdt

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/streamscore/streamscore/models"
)

// expect is what XGBoost wrote for a fixture (testdata/make_fixtures.py).
type expect struct {
	Rows          [][]*float64 `json:"rows"` // null = missing
	Predictions   []float64    `json:"predictions"`
	Margins       []float64    `json:"margins"`
	Contributions [][]float64  `json:"contributions"` // features then bias
}

func loadFixture(t *testing.T, name string) (*models.Model, expect, []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".model.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e expect
	eb, err := os.ReadFile(filepath.Join("testdata", name+".expect.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(eb, &e); err != nil {
		t.Fatal(err)
	}
	var inputs []string
	for i := range e.Rows[0] {
		inputs = append(inputs, fmt.Sprintf("f%d", i))
	}
	f, err := Import(b, name, inputs)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := f.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m, err := models.Parse(enc)
	if err != nil {
		t.Fatal(err)
	}
	return m, e, inputs
}

// TestParityWithXGBoost scores the fixtures' rows (with missing values)
// and compares with XGBoost's own predictions (1e-6) and pred_contribs
// (1e-5, the features' values and the bias column).
func TestParityWithXGBoost(t *testing.T) {
	for _, name := range []string{"binary", "regression"} {
		t.Run(name, func(t *testing.T) {
			m, e, inputs := loadFixture(t, name)
			s, err := m.Bind(inputs)
			if err != nil {
				t.Fatal(err)
			}
			nf := len(inputs)
			rows := len(e.Rows)
			x := make([]float32, rows*nf)
			missing := 0
			for r, row := range e.Rows {
				for i, v := range row {
					if v == nil {
						x[r*nf+i] = float32(math.NaN())
						missing++
					} else {
						x[r*nf+i] = float32(*v)
					}
				}
			}
			if missing == 0 {
				t.Fatal("fixture has no missing values")
			}
			out := make([]float32, rows)
			s.Score(x, rows, out)
			for r := range rows {
				if d := math.Abs(float64(out[r]) - e.Predictions[r]); d > 1e-6 {
					t.Errorf("row %d: score %v, xgboost %v (diff %g)", r, out[r], e.Predictions[r], d)
				}
			}
			bias, _ := m.ExpectedMargin()
			var rs []models.Reason
			for r := range rows {
				c := e.Contributions[r]
				if d := math.Abs(bias - c[nf]); d > 1e-5 {
					t.Fatalf("bias %v, xgboost %v", bias, c[nf])
				}
				rs = s.Reasons(x, r, nf, rs[:0])
				if len(rs) != nf {
					t.Fatalf("row %d: %d reasons", r, len(rs))
				}
				for _, rr := range rs {
					var i int
					fmt.Sscanf(rr.Feature, "f%d", &i)
					if d := math.Abs(float64(rr.Contribution) - c[i]); d > 1e-5 {
						t.Errorf("row %d %s: contribution %v, xgboost %v (diff %g)", r, rr.Feature, rr.Contribution, c[i], d)
					}
				}
			}
		})
	}
}
