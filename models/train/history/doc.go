// Package history fits a streamscore model on recorded history: it replays
// events and labels through the stream's own feature code
// (features.Replay), builds the training and evaluation sets of a [Plan]
// from the rows, fits the model family the plan names (package train),
// pins the feature definitions, and evaluates the model on a later range.
// It is `streamscore train` without its flags, progress bars and output
// file, for embedders that train from their own code.
//
// # Concepts
//
// A [Source] is the history in memory: events in event-time order, labels,
// and the feature options the stream runs (spec, lateness, caps). [Replay]
// is the one replay loop of train and backtest: every event before an end
// time, with its feature row, cancellable through its context. [Train]
// keeps the rows of [From, To) as training rows and [To, EvalTo) as
// evaluation rows; targets come from Plan.Fraud (the label as known at the
// end of the labels file, for `streamscore train`). Sequence families
// (cnn, gru, lstm) keep every row before To with its card so that each
// card's state at From is warmed up by its earlier history, as in the
// stream; only rows in [From, To) count in the loss.
//
// Training is deterministic for a plan and a seed (train.WithSeed): the
// same source and plan give byte-identical files.
//
// # Concurrency
//
// Functions are safe for concurrent use on distinct plans; a Source is
// only read. The trainers' own goroutines (GBDT histograms) are joined
// before they return.
//
// # Metrics
//
// None: training is a batch job; progress is reported through
// Plan.ReplayProgress and train.WithProgress.
package history
