package main

import (
	"flag"

	"github.com/streamscore/streamscore/models/train"
)

// gbdtTrainFlags are the flags of `train --kind gbdt` (ignored by the
// other kinds).
type gbdtTrainFlags struct {
	trees          *int
	maxDepth       *int
	maxLeaves      *int
	minChildWeight *float64
	subsample      *float64
	colsample      *float64
	rate           *float64
	lambda         *float64
	patience       *int
}

func (g *gbdtTrainFlags) register(fs *flag.FlagSet) {
	g.trees = fs.Int("trees", 500, "gbdt: maximum boosting rounds (trees); early stopping on the held-out tail usually ends sooner")
	g.maxDepth = fs.Int("max-depth", 6, "gbdt: depth limit of each tree (1..16)")
	g.maxLeaves = fs.Int("max-leaves", 0, "gbdt: leaf limit of each tree (0: only the depth limit)")
	g.minChildWeight = fs.Float64("min-child-weight", 1, "gbdt: minimum sum of hessians in a child of a split")
	g.subsample = fs.Float64("subsample", 0.8, "gbdt: fraction of training rows drawn per tree, (0, 1]")
	g.colsample = fs.Float64("colsample", 0.8, "gbdt: fraction of features drawn per tree, (0, 1]")
	g.rate = fs.Float64("learning-rate", 0.1, "gbdt: shrinkage of each tree's leaf values")
	g.lambda = fs.Float64("lambda", 1, "gbdt: L2 penalty on leaf values")
	g.patience = fs.Int("early-stop", 30, "gbdt: rounds without a better held-out loss that end training (the best round's trees are kept)")
}

func (g *gbdtTrainFlags) options() []train.Option {
	return []train.Option{
		train.WithTrees(*g.trees), train.WithMaxDepth(*g.maxDepth), train.WithMaxLeaves(*g.maxLeaves),
		train.WithMinChildWeight(*g.minChildWeight), train.WithSubsample(*g.subsample, *g.colsample),
		train.WithLearningRate(*g.rate), train.WithL2(*g.lambda), train.WithPatience(*g.patience),
	}
}
