package train

import (
	"context"
	"errors"
	"fmt"

	"github.com/streamscore/streamscore/models"
)

// ErrKind is returned (wrapped) for a model family the called function
// does not fit.
var ErrKind = errors.New("train: unknown model family")

// Fit fits a model of the row-by-row family kind (models.FamilyLogistic,
// FamilyMLP, FamilyGBDT or FamilyLinear) on ds: the --kind dispatch of
// `streamscore train` and `backtest`. A sequence family or an unknown kind
// is an error wrapping ErrKind.
func Fit(ctx context.Context, kind, name string, version int, ds *Dataset, opts ...Option) (*models.File, error) {
	switch kind {
	case models.FamilyMLP:
		return MLP(ctx, name, version, ds, opts...)
	case models.FamilyLogistic:
		return Logistic(ctx, name, version, ds, opts...)
	case models.FamilyGBDT:
		return GBDT(ctx, name, version, ds, opts...)
	case models.FamilyLinear:
		return Linear(ctx, name, version, ds, opts...)
	}
	return nil, fmt.Errorf("fit: kind %q is not a row-by-row family (logistic, mlp, gbdt, linear): %w", kind, ErrKind)
}

// FitSeq fits a model of the sequence family kind (models.FamilyCNN,
// FamilyGRU or FamilyLSTM) on ds. Another kind is an error wrapping
// ErrKind.
func FitSeq(ctx context.Context, kind, name string, version int, ds *SeqDataset, opts ...Option) (*models.File, error) {
	switch kind {
	case models.FamilyCNN:
		return CNN(ctx, name, version, ds, opts...)
	case models.FamilyGRU:
		return GRU(ctx, name, version, ds, opts...)
	case models.FamilyLSTM:
		return LSTM(ctx, name, version, ds, opts...)
	}
	return nil, fmt.Errorf("fit: kind %q is not a sequence family (cnn, gru, lstm): %w", kind, ErrKind)
}

// IsSeqKind reports whether kind is a sequence family (per-card state:
// cnn, gru, lstm), fitted by FitSeq on a SeqDataset.
func IsSeqKind(kind string) bool {
	switch kind {
	case models.FamilyCNN, models.FamilyGRU, models.FamilyLSTM:
		return true
	}
	return false
}
