package output

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestAppendTime compares appendTime with AppendFormat(time.RFC3339Nano) in
// UTC: on every day from 1970 to 9999 at a random time of day and random
// nanoseconds (with every count of trailing zeros), at the edges of the
// range and outside it, and in other zones.
func TestAppendTime(t *testing.T) {
	var got, want []byte
	check := func(tm time.Time) {
		t.Helper()
		got = appendTime(got[:0], tm)
		want = append(want[:0], '"')
		want = tm.UTC().AppendFormat(want, time.RFC3339Nano)
		want = append(want, '"')
		if string(got) != string(want) {
			t.Fatalf("%v: got %s, want %s", tm, got, want)
		}
	}
	r := rand.New(rand.NewPCG(4, 2))
	nanos := func() int {
		ns := r.IntN(1e9)
		for range r.IntN(10) { // trailing zeros: 0 to 9
			ns = ns / 10 * 10
		}
		return ns
	}
	for day := int64(0); day < maxFastUnix/86400; day++ {
		check(time.Unix(day*86400+r.Int64N(86400), int64(nanos())))
		check(time.Unix(day*86400, 0))
	}
	cet := time.FixedZone("CET", 3600)
	for _, tm := range []time.Time{
		time.Unix(0, 0), time.Unix(0, 1), time.Unix(maxFastUnix-1, 999_999_999), time.Unix(maxFastUnix, 0),
		time.Unix(-1, 5), time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-5, 3, 1, 0, 0, 0, 10, time.UTC),
		time.Date(12026, 3, 1, 0, 0, 0, 10, time.UTC), time.Date(2000, 2, 29, 23, 59, 59, 100, time.UTC),
		time.Date(2026, 11, 28, 16, 4, 5, 125200000, cet), time.Date(1970, 1, 1, 0, 30, 0, 0, cet),
		time.Now(), {},
	} {
		check(tm)
	}
}

func BenchmarkAppendTime(b *testing.B) {
	tm := time.Date(2026, 11, 28, 15, 4, 5, 123456000, time.UTC)
	buf := make([]byte, 0, 64)
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			buf = appendTime(buf[:0], tm)
		}
	})
	b.Run("AppendFormat", func(b *testing.B) {
		for b.Loop() {
			buf = append(buf[:0], '"')
			buf = tm.UTC().AppendFormat(buf, time.RFC3339Nano)
			buf = append(buf, '"')
		}
	})
}
