package stream

import (
	"slices"
	"testing"
)

func TestPlacement(t *testing.T) {
	for _, tc := range []struct {
		name    string
		workers int
		parts   int
		want    []int // worker of partitions 0, 1, …
	}{
		{"one worker", 1, 4, []int{0, 0, 0, 0}},
		{"fewer workers", 3, 7, []int{0, 1, 2, 0, 1, 2, 0}},
		{"as many", 4, 4, []int{0, 1, 2, 3}},
		{"more workers", 6, 3, []int{0, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []int
			for part := range tc.parts {
				got = append(got, placement(tc.workers).worker(part))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
