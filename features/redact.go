package features

import (
	"crypto/sha256"
	"strconv"
)

// What a dead letter may keep of a message the Decoder refused (the policy
// the stream applies; see the sinks package's DeadLetterRecord):
//
//   - never the message itself: its members outside the event (or label)
//     contract — a CVV, a track, a name — are dropped unseen;
//   - the contract's members, redacted by AppendRedactedEvent and
//     AppendRedactedLabel: card_id as its pseudonym when there is a PAN
//     key, any value holding a card number in clear replaced by
//     "[redacted: clear_pan]", objects and arrays by "[redacted: not a
//     scalar]", values over 256 bytes by "[redacted: <n> bytes]";
//   - a digest of the whole message for correlation (AppendDigest):
//     HMAC-SHA-256 under the active PAN key when there is one, else SHA-256,
//     but no digest at all when the message holds a card number in clear and
//     there is no key (an unkeyed hash of a message whose other members the
//     redacted form shows could be inverted by trying every card number);
//   - the message key through AppendSafeKey.

const (
	maxRedactedValue   = 256 // raw bytes of one kept value
	maxRedactedMembers = 16  // members kept (duplicates included)
)

// AppendRedactedEvent appends to dst a JSON object holding only the event
// contract's members of raw, redacted as described above, and true; or dst
// unchanged and false when raw is not a syntactically valid JSON object (a
// malformed message keeps nothing).
func (d *Decoder) AppendRedactedEvent(dst, raw []byte) ([]byte, bool) {
	return d.appendRedacted(dst, raw, false)
}

// AppendRedactedLabel is AppendRedactedEvent for a label message.
func (d *Decoder) AppendRedactedLabel(dst, raw []byte) ([]byte, bool) {
	return d.appendRedacted(dst, raw, true)
}

func (d *Decoder) appendRedacted(dst, raw []byte, label bool) ([]byte, bool) {
	start := len(dst)
	s := scanner{b: raw}
	s.ws()
	if s.peek() != '{' {
		return dst, false
	}
	s.i++
	dst = append(dst, '{')
	s.ws()
	if s.peek() == '}' {
		return append(dst, '}'), true
	}
	members := 0
	var keyBuf [32]byte
	for {
		s.ws()
		ks, ke, kesc, ok := s.str()
		if !ok {
			return dst[:start], false
		}
		key := raw[ks:ke]
		if kesc {
			key = appendUnescaped(keyBuf[:0], key)
		}
		s.ws()
		if s.peek() != ':' {
			return dst[:start], false
		}
		s.i++
		s.ws()
		f := eventField(key)
		if label {
			f = labelField(key)
		}
		vs := s.i
		if !s.skipValue(0) {
			return dst[:start], false
		}
		if f >= 0 && members < maxRedactedMembers {
			if members > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, '"')
			dst = append(dst, fieldNames[f]...)
			dst = append(dst, '"', ':')
			dst = d.appendRedactedValue(dst, f, raw[vs:s.i])
			members++
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			return append(dst, '}'), true
		default:
			return dst[:start], false
		}
	}
}

// appendRedactedValue appends the redacted form of v, the raw JSON value of
// contract field f.
func (d *Decoder) appendRedactedValue(dst []byte, f int, v []byte) []byte {
	switch {
	case v[0] == '{' || v[0] == '[':
		return append(dst, `"[redacted: not a scalar]"`...)
	case f == fCardID && d.cfg.pan != nil && v[0] == '"':
		card := appendUnescaped(nil, v[1:len(v)-1])
		if id, ok := pseudonymKeyID(card); ok && d.cfg.pan.accepts(id) {
			return append(dst, v...)
		}
		dst = append(dst, '"')
		dst = d.cfg.pan.appendPseudonym(dst, card)
		return append(dst, '"')
	case panIn(v):
		return append(dst, `"[redacted: clear_pan]"`...)
	case len(v) > maxRedactedValue:
		dst = append(dst, `"[redacted: `...)
		dst = strconv.AppendInt(dst, int64(len(v)), 10)
		return append(dst, ` bytes]"`...)
	}
	return append(dst, v...)
}

// AppendDigest appends a digest of the whole message raw for correlating
// a dead letter with the message upstream: its HMAC-SHA-256 under the active
// PAN key (keyID is that key's id), or without a key its SHA-256 (keyID "").
// Without a key, a message holding a card number in clear gets no digest:
// ok is false and dst is returned unchanged.
func (d *Decoder) AppendDigest(dst, raw []byte) (out []byte, keyID string, ok bool) {
	if k := d.cfg.pan; k != nil {
		return k.appendMAC(dst, raw), k.KeyID(), true
	}
	if panIn(raw) {
		return dst, "", false
	}
	sum := sha256.Sum256(raw)
	return append(dst, sum[:]...), "", true
}

// AppendSafeKey appends what may be kept of a message key (the card id by
// contract): with a PAN key, the key's pseudonym (a pseudonym under one of
// the key file's ids as it is); without one, the key unless it holds a card
// number in clear, in which case nothing is appended.
func (d *Decoder) AppendSafeKey(dst, key []byte) []byte {
	if len(key) == 0 {
		return dst
	}
	if k := d.cfg.pan; k != nil {
		if id, ok := pseudonymKeyID(key); ok && k.accepts(id) {
			return append(dst, key...)
		}
		return k.appendPseudonym(dst, key)
	}
	if panIn(key) {
		return dst
	}
	return append(dst, key...)
}
