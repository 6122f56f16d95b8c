// Package train fits streamscore models from float32 feature rows and returns
// them as [models.File] values ready to encode.
//
// # Concepts
//
// A [Dataset] holds rows of features (as built by features.Replay, in event
// time order) and one target per row. Every trainer learns the input
// standardisation (mean, std) from its training rows and stores it in the
// model, holds out the latest rows (WithHoldout, default 20%) for early
// stopping and threshold selection, and records its settings and the
// validation metrics in the file's "training" metadata.
//
//   - [Logistic]: L2-regularised logistic regression by Newton's method
//     with a backtracking line search (gonum optimize; the Hessian built
//     with gonum mat in blocks of rows). Unweighted, so scores are
//     calibrated.
//   - [Linear]: ridge regression via the normal equations (gonum mat). Used
//     for the "risk" model, whose target is the loss of a transaction.
//   - [MLP]: ReLU hidden layers and a sigmoid output, mini-batch Adam on a
//     class-weighted log loss (positives weighted sqrt(neg/pos) by default,
//     the bias shifted back afterwards so scores stay calibrated), early
//     stopping on the held-out tail. Deterministic for a seed.
//   - [GBDT]: gradient-boosted trees (family gbdt), second-order boosting
//     on histogram-binned features as XGBoost's "hist": depth-wise trees
//     (WithMaxDepth 6, WithMaxLeaves), WithL2 (lambda, 1),
//     WithMinChildWeight (1), WithLearningRate (0.1), seeded WithSubsample
//     of rows and features (0.8, 0.8), the MLP's class weighting and bias
//     fix, early stopping on the held-out tail (WithPatience, 30 rounds,
//     of WithTrees 500). Histograms are built on 2 goroutines over fixed
//     row parts and summed in order: the same bytes for a seed on any
//     machine.
//
// Sequence families read a [SeqDataset]: every event of each card in time
// order, the rows in the training range marked Loss, the earlier ones only
// warming up the card's state. They fit exactly the models.Recurrent and
// models.Conv math the stream runs, in float64, and write float32 weights.
//
//   - [GRU], [LSTM]: one cell step per event of a card from a zero state,
//     a dense head on the new hidden state (default hidden 16, head H→8
//     ReLU→1 sigmoid). Mini-batches of card chunks (WithChunkLength, 32 rows;
//     WithBatchSize, 32 chunks), truncated backpropagation through time
//     with the state carried across chunks.
//   - [CNN]: ReLU convolution over the card's last WithWindow (8) rows,
//     zero-padded in front, kernel 3, 16 channels, no pooling (global
//     pooling hides which transaction looked suspicious), head C·L→1
//     sigmoid. Each convolution position is computed once per
//     chunk and shared by the overlapping windows.
//
// Both use Adam (learning rate 3e-3), the MLP's class weighting and bias
// fix, at most 8 epochs with patience 2 on the held-out last 20% of the
// loss rows in time, and compute each mini-batch's gradient in 4 fixed
// parts on up to 4 goroutines, summed in order, so that a seed gives the
// same bytes on any machine. [PredictSeq] and [EvaluateSeq] score a
// SeqDataset with a sequence model file in the same float64 arithmetic.
//
// Thresholds of probability models: alert at the validation score that
// maximises F1; review at the threshold at or below it that maximises F2
// (recall weighted more than precision: more fraud goes to a human, fewer
// transactions are blocked). Thresholds of value models: quantiles of the
// validation predictions (WithValueQuantiles, default q95 and q99).
//
// [Evaluate] measures a parsed model on another dataset (AUC, precision and
// recall at the alert and review thresholds, log loss, or RMSE/MAE/R² for
// values), scoring it exactly as the stream does.
//
// [Fit] and [FitSeq] dispatch on a family name (models.FamilyMLP, ...), as
// `streamscore train --kind` does. Package history (models/train/history)
// builds the datasets from recorded events and labels through the
// stream's feature code and fits, pins and evaluates a model in one call
// (history.Train): `streamscore train` without its flags.
//
// # Concurrency
//
// Logistic, Linear and MLP run on the calling goroutine and start none;
// GBDT starts 2 goroutines per histogram and waits for them;
// the sequence trainers and PredictSeq start up to 4 goroutines per
// mini-batch (or pass) and wait for them before returning. Concurrent calls
// on different datasets are safe. A Dataset must not be modified during a call.
//
// # Metrics
//
// None.
package train
