package features_test

import (
	"fmt"
	"log"
	"slices"
	"time"

	"github.com/streamscore/streamscore/features"
)

// A Builder computes the feature row of each event of its cards, against
// the terminals of a Shared (one per process): Update applies the event and
// writes its row.
func ExampleNewBuilder() {
	shared, err := features.NewShared()
	if err != nil {
		log.Fatal(err)
	}
	b, err := features.NewBuilder(shared)
	if err != nil {
		log.Fatal(err)
	}
	names := b.Names()
	count := slices.Index(names, "card_tx_count_1h")
	sum := slices.Index(names, "card_amount_sum_1h")
	row := make([]float32, b.Width())
	t0 := time.Date(2026, 11, 28, 15, 0, 0, 0, time.UTC)
	for i, amt := range []float64{57.20, 42.80, 10} {
		e := features.Event{TxID: fmt.Sprint("t-", i), TS: t0.Add(time.Duration(i) * 20 * time.Minute),
			CardID: "c-42", TerminalID: "m-7", Amount: amt}
		b.Update(&e, row)
		fmt.Printf("%s: card_tx_count_1h=%v card_amount_sum_1h=%.2f\n", e.TxID, row[count], row[sum])
	}
	// Output:
	// t-0: card_tx_count_1h=1 card_amount_sum_1h=57.20
	// t-1: card_tx_count_1h=2 card_amount_sum_1h=100.00
	// t-2: card_tx_count_1h=3 card_amount_sum_1h=110.00
}
