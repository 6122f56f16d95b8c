package gbdt

import (
	"testing"

	"github.com/streamscore/streamscore/models"
)

// FuzzImport checks that Import never panics on hostile input and that
// whatever it accepts encodes, parses and scores (with reasons) without
// panicking.
func FuzzImport(f *testing.F) {
	// Small seeds: the fuzzer mutates and minimises large inputs (the
	// 50-125 KB parity fixtures) far too slowly to explore anything.
	f.Add([]byte(`{"learner":{"learner_model_param":{"base_score":"1.5E0","num_feature":"6"},"objective":{"name":"reg:squarederror"},` +
		`"gradient_booster":{"name":"gbtree","model":{"trees":[{"left_children":[1,3,-1,-1,-1],"right_children":[2,4,-1,-1,-1],` +
		`"split_indices":[5,2,0,0,0],"split_conditions":[0.5,-1,1,2,3],"default_left":[true,false,false,false,false],` +
		`"sum_hessian":[4,2,2,1,1],"split_type":[0,0,0,0,0]}]}},"feature_names":["f0","f1","f2","f3","f4","f5"]},"version":[1,7,4]}`))
	f.Add([]byte(`{"learner":{"learner_model_param":{"base_score":"5E-1","num_feature":"2"},"objective":{"name":"binary:logistic"},` +
		`"gradient_booster":{"name":"gbtree","model":{"trees":[{"left_children":[1,-1,-1],"right_children":[2,-1,-1],` +
		`"split_indices":[1,0,0],"split_conditions":[0.5,-1,1],"default_left":[1,0,0],"sum_hessian":[2,1,1]}]}}}}`))
	inputs6 := []string{"f0", "f1", "f2", "f3", "f4", "f5"}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, inputs := range [][]string{inputs6[:2], inputs6} {
			file, err := Import(b, "fz", inputs)
			if err != nil {
				continue
			}
			enc, err := file.Encode()
			if err != nil {
				t.Fatalf("Import accepted a file that does not encode: %v", err)
			}
			m, err := models.Parse(enc)
			if err != nil {
				t.Fatalf("Import accepted a file that does not parse: %v", err)
			}
			s, err := m.Bind(inputs)
			if err != nil {
				t.Fatal(err)
			}
			x := make([]float32, 2*len(inputs))
			out := make([]float32, 2)
			s.Score(x, 2, out)
			_ = s.Reasons(x, 1, 3, nil)
		}
	})
}
