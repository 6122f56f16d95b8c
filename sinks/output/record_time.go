package output

import (
	"encoding/binary"
	"math/bits"
	"time"
)

// maxFastUnix is 10000-01-01T00:00:00Z: appendTime's own path covers the
// years 1970 to 9999.
const maxFastUnix = 253402300800

// appendTime appends t in UTC as an RFC 3339 string with nanoseconds
// (trailing zeros trimmed, no fraction when there are none), e.g.
// "2026-11-28T15:04:05.123Z": the bytes of
// t.UTC().AppendFormat(dst, time.RFC3339Nano) in quotes, which it calls
// for years outside 1970–9999. The date comes from the days since the
// epoch by the civil-from-days algorithm (H. Hinnant, "chrono-compatible
// low-level date algorithms"), the digits two at a time: about half of
// AppendFormat's cost (BenchmarkAppendTime). TestAppendTime compares both.
func appendTime(dst []byte, t time.Time) []byte {
	sec := t.Unix()
	if sec < 0 || sec >= maxFastUnix {
		dst = append(dst, '"')
		dst = t.UTC().AppendFormat(dst, time.RFC3339Nano)
		return append(dst, '"')
	}
	days, rem := uint64(sec)/86400, uint64(sec)%86400
	// Civil from days: eras of 400 years (146097 days) from 0000-03-01.
	z := days + 719468
	era := z / 146097
	doe := z - era*146097                                  // day of era, [0, 146096]
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365 // year of era, [0, 399]
	y := yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100) // day of the year from March 1, [0, 365]
	mp := (5*doy + 2) / 153                  // month from March, [0, 11]
	d := doy - (153*mp+2)/5 + 1
	m := mp + 3
	if mp >= 10 {
		m = mp - 9
		y++
	}
	hh, mm, ss := rem/3600, rem/60%60, rem%60
	var b [32]byte
	b[0] = '"'
	b[1], b[2] = digitPairs[y/100*2], digitPairs[y/100*2+1]
	b[3], b[4] = digitPairs[y%100*2], digitPairs[y%100*2+1]
	b[5] = '-'
	b[6], b[7] = digitPairs[m*2], digitPairs[m*2+1]
	b[8] = '-'
	b[9], b[10] = digitPairs[d*2], digitPairs[d*2+1]
	b[11] = 'T'
	b[12], b[13] = digitPairs[hh*2], digitPairs[hh*2+1]
	b[14] = ':'
	b[15], b[16] = digitPairs[mm*2], digitPairs[mm*2+1]
	b[17] = ':'
	b[18], b[19] = digitPairs[ss*2], digitPairs[ss*2+1]
	n := 20
	if ns := uint64(t.Nanosecond()); ns != 0 {
		// Nine digits: the first eight at once (digits8), then the last;
		// the trailing zeros dropped by counting zero bytes, no loop.
		b[20] = '.'
		q := ns / 10
		r := ns - q*10
		w := digits8(q)
		binary.LittleEndian.PutUint64(b[21:], w+asciiZeros)
		b[29] = byte('0' + r)
		n = 30
		if r == 0 {
			n = 29 - bits.LeadingZeros64(w)/8 // w != 0: ns is not 0
		}
	}
	b[n], b[n+1] = 'Z', '"'
	return append(dst, b[:n+2]...)
}
