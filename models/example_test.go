package models_test

import (
	"fmt"
	"log"

	"github.com/streamscore/streamscore/features"
	"github.com/streamscore/streamscore/models"
)

// Load reads and validates a model file (the engine also checks its
// signature: Trust.Verify); Bind maps its inputs to the columns of the
// feature rows a Builder writes, and the Scorer scores batches of rows.
func ExampleLoad() {
	m, err := models.Load("shipped/fraud_lr.json")
	if err != nil {
		log.Fatal(err)
	}
	names := features.Names() // the columns of a default Builder's rows
	s, err := m.Bind(names)
	if err != nil {
		log.Fatal(err)
	}
	rows := make([]float32, 2*len(names)) // two rows of the stream's layout
	out := make([]float32, 2)
	s.Score(rows, 2, out)
	fmt.Println(m.Name(), m.Family(), m.Output(), len(m.Inputs()), "inputs")
	fmt.Println("scores in [0, 1]:", out[0] >= 0 && out[0] <= 1 && out[1] == out[0])
	// Output:
	// fraud_lr logistic probability 39 inputs
	// scores in [0, 1]: true
}
