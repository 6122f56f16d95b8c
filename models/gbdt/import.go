// Package gbdt imports gradient-boosted tree models trained elsewhere into
// native model files of family "gbdt" (see package models): XGBoost's JSON
// model format, as written by Booster.save_model("model.json") (parity
// tested with XGBoost 1.7; 2.x's one-element vector base_score is read
// too).
//
// Supported: booster "gbtree" with numerical splits, objectives
// "binary:logistic" (the output is the probability, the margin is
// logit(base_score) + Σ leaves) and "reg:squarederror" (the output is
// base_score + Σ leaves), one target, any num_parallel_tree, missing
// values with each split's default direction. Refused with
// [ErrUnsupported]: other objectives (multi-class, ranking, survival),
// "dart" and "gblinear", categorical splits, vector leaves. A model file
// is bounded by [MaxFileSize] and the trees by the limits of package
// models (MaxTrees, MaxTreeNodes, MaxTreeDepth); Import checks what the
// native format checks (feature indices in range, a tree and not a graph,
// finite values) before it returns.
//
// Parity: the tests in this package compare the imported models with
// predictions, margins and pred_contribs that XGBoost 1.7 itself wrote for
// the same rows (testdata, re-created by testdata/make_fixtures.py):
// predictions within 1e-6, TreeSHAP contributions within 1e-5.
package gbdt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/internal/importopt"
)

// MaxFileSize bounds an XGBoost JSON model file (bytes).
const MaxFileSize = 256 << 20

// Errors returned (wrapped) by [Import].
var (
	ErrUnsupported = errors.New("gbdt: unsupported xgboost model")
	ErrMalformed   = errors.New("gbdt: malformed xgboost model")
)

// Option tunes [Import].
type Option func(*config) error

type config struct {
	importopt.Config
}

// WithVersion sets the model version written to the file (default 1); it
// must be >= 1. Bump it per import of a retrained model so that score
// records tell them apart.
func WithVersion(n int) Option {
	return func(c *config) error { return c.SetVersion(n) }
}

// WithThresholds sets the decision cut-offs (review <= alert, both
// finite). Default: review 0.5 and alert 0.9 for binary:logistic; for
// reg:squarederror both at the largest float32, i.e. the model never
// reviews or alerts until real cut-offs are given — an imported value has
// no natural scale.
func WithThresholds(review, alert float64) Option {
	return func(c *config) error { return c.SetThresholds(review, alert) }
}

// WithTraining adds free metadata to the file's training map (default: the
// XGBoost version and objective only; a later call's keys win). The
// importer sets "xgboost_version" and "objective" after it: those two keys
// given here are replaced.
func WithTraining(m map[string]any) Option {
	return func(c *config) error { c.AddTraining(m); return nil }
}

// The parts of XGBoost's JSON model that matter here.
type xgbModel struct {
	Learner struct {
		FeatureNames     []string `json:"feature_names"`
		LearnerModelParm struct {
			BaseScore string `json:"base_score"`
			NumClass  string `json:"num_class"`
			NumTarget string `json:"num_target"`
			NumFeat   string `json:"num_feature"`
		} `json:"learner_model_param"`
		Objective struct {
			Name string `json:"name"`
		} `json:"objective"`
		GradientBooster struct {
			Name  string `json:"name"`
			Model struct {
				Trees    []xgbTree `json:"trees"`
				TreeInfo []int     `json:"tree_info"`
			} `json:"model"`
		} `json:"gradient_booster"`
	} `json:"learner"`
	Version []int `json:"version"`
}

type xgbTree struct {
	Left      []int64           `json:"left_children"`
	Right     []int64           `json:"right_children"`
	Index     []int64           `json:"split_indices"`
	Cond      []float32         `json:"split_conditions"`
	Default   []json.RawMessage `json:"default_left"` // 0/1 (1.x) or true/false
	Hess      []float32         `json:"sum_hessian"`
	SplitType []int             `json:"split_type"`
	Param     struct {
		SizeLeafVector string `json:"size_leaf_vector"`
	} `json:"tree_param"`
}

// Import converts the XGBoost JSON model b into a native model file named
// name whose inputs are the features inputs, in the order of XGBoost's
// feature columns (split index i reads inputs[i]). When the XGBoost model
// records feature names, they must equal inputs. The file records no
// feature definitions: pin them with [models.File.PinFeatures] before
// encoding. Inputs get mean 0 and std 1 (trees do not standardise).
func Import(b []byte, name string, inputs []string, opts ...Option) (*models.File, error) {
	cfg := config{importopt.Default()}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, fmt.Errorf("import xgboost: %w", err)
		}
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("import xgboost: %d bytes, more than %d: %w", len(b), MaxFileSize, ErrUnsupported)
	}
	var x xgbModel
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&x); err != nil {
		return nil, fmt.Errorf("import xgboost: %w: %w", ErrMalformed, err)
	}
	l := &x.Learner
	if l.GradientBooster.Name != "gbtree" {
		return nil, fmt.Errorf("import xgboost: booster %q: only gbtree: %w", l.GradientBooster.Name, ErrUnsupported)
	}
	if nc := l.LearnerModelParm.NumClass; nc != "" && nc != "0" && nc != "1" {
		return nil, fmt.Errorf("import xgboost: num_class %s: only single-output models: %w", nc, ErrUnsupported)
	}
	if nt := l.LearnerModelParm.NumTarget; nt != "" && nt != "1" {
		return nil, fmt.Errorf("import xgboost: num_target %s: only single-output models: %w", nt, ErrUnsupported)
	}
	nf, err := strconv.Atoi(l.LearnerModelParm.NumFeat)
	if err != nil {
		return nil, fmt.Errorf("import xgboost: num_feature %q: %w", l.LearnerModelParm.NumFeat, ErrMalformed)
	}
	if nf != len(inputs) {
		return nil, fmt.Errorf("import xgboost: the model has %d features, %d inputs given", nf, len(inputs))
	}
	if fn := l.FeatureNames; len(fn) > 0 {
		if len(fn) != len(inputs) {
			return nil, fmt.Errorf("import xgboost: the model names %d features, %d inputs given", len(fn), len(inputs))
		}
		for i := range fn {
			if fn[i] != inputs[i] {
				return nil, fmt.Errorf("import xgboost: feature %d is %q in the model, input %q given", i, fn[i], inputs[i])
			}
		}
	}
	// XGBoost 1.x writes "5E-1", 2.x a one-element vector "[5E-1]".
	bs, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimPrefix(l.LearnerModelParm.BaseScore, "["), "]"), 32)
	if err != nil || math.IsNaN(bs) || math.IsInf(bs, 0) {
		return nil, fmt.Errorf("import xgboost: base_score %q: %w", l.LearnerModelParm.BaseScore, ErrMalformed)
	}
	f := &models.File{
		Name: name, Family: models.FamilyGBDT, Version: cfg.Version,
		Trees: &models.Trees{Objective: l.Objective.Name},
	}
	switch l.Objective.Name {
	case models.ObjectiveLogistic:
		// XGBoost stores the base score as a probability and starts the
		// margin at its logit, in float32: -log(1/p - 1).
		if bs <= 0 || bs >= 1 {
			return nil, fmt.Errorf("import xgboost: base_score %v of binary:logistic outside (0, 1): %w", bs, ErrMalformed)
		}
		p := float32(bs)
		f.Trees.BaseScore = float64(float32(-math.Log(float64(1/p - 1))))
		f.Output = models.OutputProbability
	case models.ObjectiveSquared:
		f.Trees.BaseScore = float64(float32(bs))
		f.Output = models.OutputValue
	default:
		return nil, fmt.Errorf("import xgboost: objective %q: want %s or %s: %w", l.Objective.Name, models.ObjectiveLogistic, models.ObjectiveSquared, ErrUnsupported)
	}
	f.Thresholds = cfg.Thresholds(f.Output)
	for _, in := range inputs {
		f.Inputs = append(f.Inputs, models.Input{Name: in, Mean: 0, Std: 1})
	}
	trees := l.GradientBooster.Model.Trees
	if len(trees) == 0 || len(trees) > models.MaxTrees {
		return nil, fmt.Errorf("import xgboost: %d trees, want 1..%d: %w", len(trees), models.MaxTrees, ErrUnsupported)
	}
	for i := range trees {
		t, err := convertTree(&trees[i], nf)
		if err != nil {
			return nil, fmt.Errorf("import xgboost: tree %d: %w", i, err)
		}
		f.Trees.Trees = append(f.Trees.Trees, t)
	}
	tr := map[string]any{}
	for k, v := range cfg.Training {
		tr[k] = v
	}
	tr["objective"] = l.Objective.Name
	if len(x.Version) > 0 {
		v, _ := json.Marshal(x.Version)
		tr["xgboost_version"] = string(v)
	}
	f.Training = tr
	if _, err := f.Encode(); err != nil {
		return nil, fmt.Errorf("import xgboost: %w", err)
	}
	f.Digest = ""
	return f, nil
}

// convertTree copies the nodes reachable from the root (XGBoost keeps
// pruned nodes in the arrays) in depth-first order.
func convertTree(x *xgbTree, nf int) (models.Tree, error) {
	n := len(x.Left)
	if n == 0 || n > models.MaxTreeNodes {
		return models.Tree{}, fmt.Errorf("%d nodes, want 1..%d: %w", n, models.MaxTreeNodes, ErrUnsupported)
	}
	if len(x.Right) != n || len(x.Index) != n || len(x.Cond) != n || len(x.Default) != n || len(x.Hess) != n {
		return models.Tree{}, fmt.Errorf("node arrays of different lengths: %w", ErrMalformed)
	}
	if s := x.Param.SizeLeafVector; s != "" && s != "0" && s != "1" {
		return models.Tree{}, fmt.Errorf("vector leaves (size_leaf_vector %s): %w", s, ErrUnsupported)
	}
	var t models.Tree
	seen := make([]bool, n)
	var walk func(j int64, depth int) (int32, error)
	walk = func(j int64, depth int) (int32, error) {
		if j < 0 || j >= int64(n) || seen[j] {
			return 0, fmt.Errorf("child %d: out of range or reached twice: %w", j, ErrMalformed)
		}
		if depth > models.MaxTreeDepth {
			return 0, fmt.Errorf("deeper than %d: %w", models.MaxTreeDepth, ErrUnsupported)
		}
		seen[j] = true
		id := int32(len(t.Feature))
		t.Feature = append(t.Feature, -1)
		t.Threshold = append(t.Threshold, 0)
		t.Left = append(t.Left, -1)
		t.Right = append(t.Right, -1)
		t.DefaultLeft = append(t.DefaultLeft, false)
		t.Value = append(t.Value, 0)
		t.Cover = append(t.Cover, x.Hess[j])
		if x.Left[j] == -1 {
			t.Value[id] = x.Cond[j] // XGBoost keeps a leaf's value in split_conditions
			return id, nil
		}
		if len(x.SplitType) == n && x.SplitType[j] != 0 {
			return 0, fmt.Errorf("node %d: categorical split: %w", j, ErrUnsupported)
		}
		if x.Index[j] < 0 || x.Index[j] >= int64(nf) {
			return 0, fmt.Errorf("node %d: split index %d out of range of %d features: %w", j, x.Index[j], nf, ErrMalformed)
		}
		dl, err := parseBool(x.Default[j])
		if err != nil {
			return 0, fmt.Errorf("node %d: default_left: %w", j, err)
		}
		t.Feature[id] = int32(x.Index[j])
		t.Threshold[id] = x.Cond[j]
		t.DefaultLeft[id] = dl
		l, err := walk(x.Left[j], depth+1)
		if err != nil {
			return 0, err
		}
		r, err := walk(x.Right[j], depth+1)
		if err != nil {
			return 0, err
		}
		t.Left[id], t.Right[id] = l, r
		return id, nil
	}
	if _, err := walk(0, 0); err != nil {
		return models.Tree{}, err
	}
	return t, nil
}

func parseBool(r json.RawMessage) (bool, error) {
	switch string(bytes.TrimSpace(r)) {
	case "1", "true":
		return true, nil
	case "0", "false":
		return false, nil
	}
	return false, fmt.Errorf("%s: want 0, 1, true or false: %w", r, ErrMalformed)
}
