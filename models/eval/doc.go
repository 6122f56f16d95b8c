// Package eval measures one model's published scores against fraud labels:
// ROC AUC, average precision, precision and recall at decision thresholds,
// card precision top-k per day, the money and operations views (dollar
// recall and savings, alerts a day against a budget, recall per fraud
// scenario), and PNG plots of the curves and score
// distributions.
//
// # Concepts
//
// Inputs are the stream's own contracts, read back from files: score records
// ([ReadScores]: {"tx_id","card_id","ts","scores":{NAME:value,...},...}, one
// JSON object a line) and labels, which the caller decodes (the features
// package owns that contract) and adds to a [Feedback], field by field.
// Feedback turns the labels into the truth of each transaction as known at
// the end of the label feed: the label with the latest TS wins (equal TS:
// the later in the feed), and a transaction without a label is genuine.
//
// A transaction is counted once: of score records with the same tx_id (the
// stream delivers at least once) the first in the file is kept and the rest
// counted as duplicates. A record whose score for the model is null (how the
// score record encodes a non-finite score) is dropped and counted.
//
// Definitions ([Evaluate]; P is the number of fraud transactions):
//
//   - ROC AUC: the Mann-Whitney statistic, ties counted one half, which is
//     the trapezoid area under the ROC curve with tied scores as one step
//     (the measure training reports too; scores are compared as float32, the precision
//     the models produce). Undefined (null) without both classes.
//
//   - Average precision: Σ (R_i − R_{i−1}) · P_i over the distinct scores
//     from the highest, with R_i and P_i the recall and precision of
//     alerting at score ≥ that score — scikit-learn's
//     average_precision_score, no interpolation.
//
//   - At a threshold t a transaction is alerted when score ≥ t (the rule of
//     models.Scorer.Decide): precision = fraud alerted / alerted (null with
//     no alert), recall = fraud alerted / P (null without fraud).
//
//   - Without thresholds, the quantile rule applies: review and alert are
//     the scores that alert 1% and 0.5% of the transactions (the score of
//     rank ⌈share·n⌉ from the top; ties can alert more).
//
//   - Card precision top-k (Le Borgne et al., "Reproducible Machine
//     Learning for Credit Card Fraud Detection — Practical Handbook",
//     "Precision top-k metrics", function card_precision_top_k): for each
//     UTC day of event time in increasing order, drop the cards already detected on an earlier day;
//     give each remaining card that day's highest score and mark it fraud if
//     any of its transactions that day is fraud; rank the cards by score
//     (ties: card_id ascending) and take the top k; the day's precision is
//     the fraud cards among them / k (k, not the number of cards ranked).
//     Those fraud cards are detected and leave every later day. The mean is
//     over the days that have transactions.
//
//   - Money and operations: a score record carries the transaction's
//     amount; at a threshold, the fraud amount alerted, the dollar-weighted
//     recall (fraud amount alerted / all fraud amount) and savings (fraud
//     amount alerted − alert cost × alerts, [WithAlertCost]). If any record
//     lacks an amount these are null. Alerts a day divide by the UTC days
//     with transactions. Operating points: the same at the thresholds that
//     alert the top 0.05% … 5% ([OperatingShares]). Per day: alerts,
//     reviews, the alerts' precision and recall, compared with the alert
//     budget ([WithAlertBudget]; a rate budget applies to each day's own
//     transactions). Per fraud scenario ([WithScenarios], [Scenarios]): the
//     recall at review and alert and the share of its amount alerted;
//     fraud whose label names no scenario is "(unnamed)".
//
// Undefined values are NaN in Go and null in JSON ([Float]).
//
// Plots ([Result.WriteROC], [Result.WritePR], [Result.WriteScores],
// [Result.WriteMoney], [Result.WriteAlertsPerDay]) are PNG images drawn
// with gonum.org/v1/plot: the ROC curve on a log false-positive axis with
// the chance line, recall and dollar recall against alerts a day, the
// alerts and reviews of each day against the budget, the precision-recall steps with the base rate, and the score
// distribution of each class as the share of its transactions per bin on a
// log scale; each marks the review and alert thresholds. Curves of many
// distinct scores are thinned to points at least 0.001 apart.
//
// # Concurrency
//
// Functions run on the calling goroutine and start none. A [Result] is
// immutable once returned and safe for concurrent use; inputs must not be
// modified during a call.
//
// # Metrics
//
// None.
package eval
