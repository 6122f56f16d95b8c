package features

import (
	"fmt"
)

// DefaultMaxFieldBytes is the default of WithMaxFieldBytes.
const DefaultMaxFieldBytes = 256

// WithMaxFieldBytes sets the longest string field (tx_id, card_id,
// terminal_id, currency, mcc, channel, country), in bytes of UTF-8 after
// unescaping, that Decode and DecodeLabel accept; a longer one is refused
// with ReasonFieldTooLong. Default DefaultMaxFieldBytes (256). The ids and
// the country are kept in state for as long as the card or terminal lives,
// so without a bound one message could pin megabytes. The trap: the bound
// is on card_id as sent (before a PAN key pseudonymises it). n must be >= 1.
func WithMaxFieldBytes(n int) DecoderOption {
	return func(c *decoderConfig) error {
		if n < 1 {
			return fmt.Errorf("%w: max field bytes %d must be >= 1", ErrInvalidOption, n)
		}
		c.maxStr = n
		return nil
	}
}

// checkLengths refuses a string field longer than the decoder's bound. The
// error carries the field's length, never its value.
func (d *Decoder) checkLengths(p *parse) error {
	for f := range nStrFields {
		sp := p.str[f]
		n := sp.end - sp.start // raw bytes: escapes only shorten
		if p.present&(1<<f) == 0 || n <= d.cfg.maxStr {
			continue
		}
		if sp.esc {
			n = len(appendUnescaped(nil, p.s.b[sp.start:sp.end]))
			if n <= d.cfg.maxStr {
				continue
			}
		}
		return &DecodeError{Reason: ReasonFieldTooLong, Field: fieldNames[f],
			Err: fmt.Errorf("too long: %d bytes, the limit is %d", n, d.cfg.maxStr)}
	}
	return nil
}
