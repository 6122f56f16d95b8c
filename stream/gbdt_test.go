package stream_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
	"github.com/streamscore/streamscore/models/gbdt"
)

// gbdtModel imports the XGBoost parity fixture of models/gbdt as a
// gradient-boosted trees model named name reading the first 6 default
// features, pinned to the default spec.
func gbdtModel(t *testing.T, name string) *models.Model {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "models", "gbdt", "testdata", "binary.model.json"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := gbdt.Import(b, name, features.Names()[:6], gbdt.WithThresholds(0.2, 0.6))
	if err != nil {
		t.Fatal(err)
	}
	pinDefault(t, f)
	return parseModel(t, encodeModel(t, f))
}

// TestReplayMatchesStreamGBDT: a gbdt model deciding beside the shipped
// MLP gives the same scores, decisions and TreeSHAP reasons in the
// running pipeline and in Replay.
func TestReplayMatchesStreamGBDT(t *testing.T) {
	ms := append(shippedModels(t), gbdtModel(t, "fraud_gbdt"))
	replayMatchesStream(t, ms, models.ShippedDecisionModel, "fraud_gbdt")
}
