package gbdt

import (
	"errors"
	"math"
	"strings"
	"testing"
)

const small = `{"learner":{"learner_model_param":{"base_score":"5E-1","num_feature":"2","num_class":"0"},` +
	`"objective":{"name":"binary:logistic"},"feature_names":[],` +
	`"gradient_booster":{"name":"gbtree","model":{"trees":[{"left_children":[1,-1,-1],"right_children":[2,-1,-1],` +
	`"split_indices":[1,0,0],"split_conditions":[0.5,-1,1],"default_left":[1,0,0],"sum_hessian":[2,1,1],"split_type":[0,0,0]}]}}}}`

// TestImportRefuses: what the importer cannot represent faithfully is
// refused by name, and malformed trees are refused before the native
// format sees them.
func TestImportRefuses(t *testing.T) {
	cases := []struct {
		name, from, to string
		inputs         []string
		want           error
		msg            string
	}{
		{"objective", `"binary:logistic"`, `"multi:softprob"`, nil, ErrUnsupported, "multi:softprob"},
		{"classes", `"num_class":"0"`, `"num_class":"3"`, nil, ErrUnsupported, "num_class"},
		{"booster", `"name":"gbtree"`, `"name":"gblinear"`, nil, ErrUnsupported, "gblinear"},
		{"categorical", `"split_type":[0,0,0]`, `"split_type":[1,0,0]`, nil, ErrUnsupported, "categorical"},
		{"split index", `"split_indices":[1,0,0]`, `"split_indices":[2,0,0]`, nil, ErrMalformed, "split index 2"},
		{"cycle", `"left_children":[1,-1,-1]`, `"left_children":[0,-1,-1]`, nil, ErrMalformed, "reached twice"},
		{"child range", `"right_children":[2,-1,-1]`, `"right_children":[9,-1,-1]`, nil, ErrMalformed, "out of range"},
		{"lengths", `"sum_hessian":[2,1,1]`, `"sum_hessian":[2,1]`, nil, ErrMalformed, "different lengths"},
		{"base score", `"base_score":"5E-1"`, `"base_score":"1.5"`, nil, ErrMalformed, "outside (0, 1)"},
		{"base score vector", `"base_score":"5E-1"`, `"base_score":"[5E-1,1]"`, nil, ErrMalformed, "base_score"},
		{"default_left", `"default_left":[1,0,0]`, `"default_left":[2,0,0]`, nil, ErrMalformed, "default_left"},
		{"not json", `{"learner"`, `{"learner"]`, nil, ErrMalformed, ""},
		{"feature names", `"feature_names":[]`, `"feature_names":["a","z"]`, []string{"a", "b"}, nil, `feature 1 is "z"`},
		{"inputs", "", "", []string{"a"}, nil, "2 features, 1 inputs"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := c.inputs
			if in == nil {
				in = []string{"a", "b"}
			}
			b := small
			if c.from != "" {
				if !strings.Contains(b, c.from) {
					t.Fatalf("fixture lacks %q", c.from)
				}
				b = strings.Replace(b, c.from, c.to, 1)
			}
			_, err := Import([]byte(b), "x", in)
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("Import = %v, want %v containing %q", err, c.want, c.msg)
			}
		})
	}
	if _, err := Import([]byte(small), "x", []string{"a", "b"}); err != nil {
		t.Fatalf("the unmodified fixture: %v", err)
	}
	// XGBoost 2.x writes the base score as a one-element vector.
	f, err := Import([]byte(strings.Replace(small, `"5E-1"`, `"[2E-1]"`, 1)), "x", []string{"a", "b"})
	if err != nil || math.Abs(f.Trees.BaseScore-math.Log(0.25)) > 1e-6 {
		t.Fatalf("base_score [2E-1]: %v, margin %v, want log(0.2/0.8)", err, f)
	}
}
