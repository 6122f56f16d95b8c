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
//     (IRLS), solved with gonum mat. Unweighted, so scores are calibrated.
//   - [Linear]: ridge regression via the normal equations (gonum mat). Used
//     for the "risk" model, whose target is the loss of a transaction.
//   - [MLP]: ReLU hidden layers and a sigmoid output, mini-batch Adam on a
//     class-weighted log loss (positives weighted sqrt(neg/pos) by default,
//     the bias shifted back afterwards so scores stay calibrated), early
//     stopping on the held-out tail. Deterministic for a seed.
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
// # Concurrency
//
// Trainers run on the calling goroutine and start none; concurrent calls on
// different datasets are safe. A Dataset must not be modified during a call.
//
// # Metrics
//
// None.
package train
