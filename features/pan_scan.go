package features

// A card number (PAN) in clear is a run of 13 to 19 digits that passes the
// Luhn check, written either without separators or grouped the way cards
// print them: groups of four separated by one space or one hyphen, the last
// group shorter (4-4-4-4, 4-4-4-4-3, 4-4-4-1), or the 4-6-5 and 4-6-4
// layouts of American Express and Diners. A run of digits with letters on
// either side counts as well ("card4111111111111111"); a run of more than 19
// digits does not (it is some other number), nor does the fraction of a
// decimal number (digits right after a digit and a '.'), nor other groupings such as
// "20261128-000123". JSON \u escapes of digits are read as digits.
//
// The false positives are known: a random 13-19 digit number passes the Luhn
// check one time in ten, so numeric identifiers of that length (snowflake
// ids, some RRNs) in a checked field are refused one time in ten. Such
// identifiers should not be in the checked fields, or carry a prefix that is
// not a digit followed by a separator-free digit run of 13-19.

const (
	minPANDigits = 13
	maxPANDigits = 19
)

// panRun accumulates one run of digits for panIn.
type panRun struct {
	d      [maxPANDigits]byte
	n      int // digits seen (may exceed maxPANDigits)
	groups [6]uint8
	ng     int
	sep    byte // the run's separator, 0 until one is seen
	gap    byte // a separator just seen after a digit, 0 when none
}

// end reports whether the run is a PAN and resets it.
func (r *panRun) end() bool {
	ok := r.n >= minPANDigits && r.n <= maxPANDigits && r.grouped() && luhn(r.d[:r.n])
	*r = panRun{}
	return ok
}

func (r *panRun) grouped() bool {
	g := r.groups[:r.ng]
	switch {
	case len(g) <= 1:
		return true
	case len(g) == 3 && g[0] == 4 && g[1] == 6 && (g[2] == 5 || g[2] == 4):
		return true
	}
	for _, n := range g[:len(g)-1] {
		if n != 4 {
			return false
		}
	}
	return g[len(g)-1] >= 1 && g[len(g)-1] <= 4
}

// digit adds c ('0'-'9') to the run; it reports whether a run ended before
// it (a separator of another kind) was a PAN.
func (r *panRun) digit(c byte) bool {
	found := false
	if r.gap != 0 {
		if r.sep != 0 && r.gap != r.sep {
			found = r.end()
		} else {
			r.sep = r.gap
			if r.ng < len(r.groups) {
				r.ng++
			} else {
				r.n = maxPANDigits + 1 // too many groups: not a card layout
			}
		}
		r.gap = 0
	}
	if r.ng == 0 {
		r.ng = 1
	}
	if r.n < maxPANDigits {
		r.d[r.n] = c
	}
	if r.n <= maxPANDigits {
		r.n++
	}
	if r.groups[r.ng-1] < 255 {
		r.groups[r.ng-1]++
	}
	return found
}

// other handles a byte that is not a digit; it reports whether it ended a
// run that is a PAN.
func (r *panRun) other(c byte) bool {
	if r.n == 0 {
		return false
	}
	if (c == ' ' || c == '-') && r.gap == 0 {
		r.gap = c
		return false
	}
	return r.end()
}

// luhn reports whether the digits pass the Luhn check.
func luhn(d []byte) bool {
	sum := 0
	double := false
	for i := len(d) - 1; i >= 0; i-- {
		v := int(d[i] - '0')
		if double {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
		double = !double
	}
	return sum%10 == 0
}

// panIn reports whether b (raw JSON text: a string's content with its
// escapes, or a whole message) holds a card number in clear.
func panIn(b []byte) bool {
	// Fast path: most values hold far fewer than 13 digits (escapes may
	// hide digits, so they count too).
	n := 0
	for _, c := range b {
		if c-'0' <= 9 || c == '\\' {
			n++
		}
	}
	if n < minPANDigits {
		return false
	}
	var r panRun
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c == '\\' && i+1 < len(b) {
			if b[i+1] == 'u' {
				if v, ok := hex4(b[i+2:]); ok {
					i += 5
					if v >= '0' && v <= '9' {
						if r.digit(byte(v)) {
							return true
						}
						continue
					}
					if v < 0x80 {
						c = byte(v)
					} else {
						c = 'x'
					}
					if r.other(c) {
						return true
					}
					continue
				}
			}
			i++ // a two-byte escape: not a digit nor a separator
			if r.other('x') {
				return true
			}
			continue
		}
		if c >= '0' && c <= '9' {
			if r.n == 0 && i > 1 && b[i-1] == '.' && b[i-2]-'0' <= 9 {
				r.n = maxPANDigits + 1 // a decimal fraction, not a card number
			}
			if r.digit(c) {
				return true
			}
			continue
		}
		if r.other(c) {
			return true
		}
	}
	return r.end()
}

// PANIn reports whether s holds a card number in clear: a 13-19 digit run,
// plain or grouped as cards print it, that passes the Luhn check. The
// Decoder refuses such values (ReasonClearPAN); use PANIn to check text of
// your own (a file name, a log line) the same way.
func PANIn(s string) bool { return panIn([]byte(s)) }
