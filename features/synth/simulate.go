package synth

import (
	"fmt"
	"math"
	"time"
)

// Intensity returns the population's relative transaction rate at t: 1 is
// the weekly mean; the night trough (03:00-05:00 local) is about 0.1 of it and
// the evening peak about 1.6. Local time is Central European Time (UTC+1).
func Intensity(t time.Time) float64 { return intensity(t.UnixMilli()) }

// Simulate runs a simulated clock over [from, to): transactions arrive as a
// Poisson process whose rate is ratePerSec × Intensity (so the mean rate over
// a week is ratePerSec), and fn receives each Next in time order. It stops at
// the first error from fn and returns it.
func (g *Generator) Simulate(from, to time.Time, ratePerSec float64, fn func(Tx) error) error {
	if !(ratePerSec > 0) || math.IsInf(ratePerSec, 0) {
		return fmt.Errorf("synth: simulate: rate %v must be positive and finite", ratePerSec)
	}
	if !to.After(from) {
		return fmt.Errorf("synth: simulate: empty range [%v, %v)", from, to)
	}
	start := from.UnixNano()
	end := to.UnixNano() - start
	// Time runs in float64 nanoseconds since start (exact to well below a
	// millisecond over centuries). The rate is constant within a 5-minute
	// slot of wall time.
	const slot = int64(5 * time.Minute)
	phase := ((start % slot) + slot) % slot
	var t float64
	slotEnd := int64(math.MinInt64)
	var lambda float64 // events per nanosecond
	for {
		cur := int64(t)
		if cur >= slotEnd {
			slotStart := cur - ((cur+phase)%slot+slot)%slot
			slotEnd = slotStart + slot
			lambda = ratePerSec * intensity((start+slotStart+slot/2)/int64(time.Millisecond)) / 1e9
		}
		dt := g.rng.ExpFloat64() / lambda
		if next := int64(t + dt); next >= slotEnd && slotEnd < end {
			// Memorylessness: restart the draw at the slot boundary with the
			// next slot's rate.
			t = float64(slotEnd)
			continue
		}
		t += dt
		if int64(t) >= end {
			return nil
		}
		if err := fn(g.Next(time.Unix(0, start+int64(t)))); err != nil {
			return err
		}
	}
}
