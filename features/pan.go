package features

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"strings"
	"sync"
)

// ErrPANKey is wrapped by the errors of LoadPANKey and ParsePANKey: the key
// file is unreadable, malformed, too permissive or holds a weak key.
var ErrPANKey = errors.New("features: pan key")

// PseudonymPrefix starts every card pseudonym: "p1:<key-id>:<mac>", where
// <mac> is the first 18 bytes of HMAC-SHA-256(key, card_id) in unpadded
// base64url (24 characters) and <key-id> names the key that made it. The
// "p1" is the format version.
const PseudonymPrefix = "p1:"

const (
	pseudonymMACBytes = 18 // 144 bits: no collision among 10^15 cards in practice
	pseudonymMACChars = 24 // base64url of 18 bytes, unpadded
	maxKeyIDLen       = 16
	minPANKeyBytes    = 32 // HMAC-SHA-256 keys of 256 bits
	maxPseudonymLen   = len(PseudonymPrefix) + maxKeyIDLen + 1 + pseudonymMACChars
)

// PANKey is the secret that turns card numbers into pseudonyms: an active
// key (the first line of its file) and, during a rotation, the previous one
// (an optional second line). It is safe for concurrent use.
//
// Every card_id is replaced by its pseudonym under the active key. A card_id
// that already is a pseudonym under either key's id is kept as it is (it was
// pseudonymised upstream, or comes from this engine's own records, such as a
// label built from an alert); a pseudonym under any other key id is refused
// (ReasonPseudonymKey).
//
// During a rotation (a previous key is configured) the Decoder also computes
// a clear card number's pseudonym under the previous key (Event.CardAlias,
// Label.CardAlias), so that the Builder can move the card's state from its
// old pseudonym to its new one (see Event.CardAlias). A pseudonym received
// as such cannot be translated from one key to the other (an HMAC cannot be
// inverted): it has no alias.
type PANKey struct {
	ids  []string  // ids[0] active, ids[1] previous (optional)
	pool sync.Pool // *panMAC under the active key
	prev sync.Pool // *panMAC under the previous key; New is nil without one
}

// panMAC is one pooled HMAC under one key with its output buffer, so that a
// pseudonym costs no allocation.
type panMAC struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

// LoadPANKey reads a key file (see ParsePANKey). It refuses a file that
// others than its owner and group may read or write (mode & 0o007 != 0): a
// card-number key readable by every local user is not a secret. On
// Kubernetes, mount the secret with defaultMode 0400 (or 0440).
func LoadPANKey(path string) (*PANKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPANKey, err)
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%w: %s is a directory", ErrPANKey, path)
	}
	if perm := fi.Mode().Perm(); perm&0o007 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %#o: others may access it; chmod o-rwx (0400 or 0440)", ErrPANKey, path, perm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPANKey, err)
	}
	k, err := ParsePANKey(b)
	clear(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// ParsePANKey parses the text of a key file: one key per line,
// "<key-id> <key>", the active key first and at most one previous key after
// it; blank lines and lines starting with # are ignored. A key id is 1-16
// characters of [A-Za-z0-9._-]; the two ids must differ. A key is hex (only
// hex digits) or else base64 (standard or URL alphabet, padded or not), and
// at least 32 bytes long once decoded: generate one with
// `head -c 32 /dev/urandom | base64` or `openssl rand -hex 32`. Errors name
// the line, never the key.
func ParsePANKey(text []byte) (*PANKey, error) {
	k := &PANKey{}
	var secrets [][]byte
	for n, line := range bytes.Split(text, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		f := bytes.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("%w: line %d: want \"<key-id> <key>\"", ErrPANKey, n+1)
		}
		id := string(f[0])
		if !validKeyID(id) {
			return nil, fmt.Errorf("%w: line %d: key id must be 1-%d characters of [A-Za-z0-9._-]", ErrPANKey, n+1, maxKeyIDLen)
		}
		secret, err := decodeKey(f[1])
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: key is neither hex nor base64", ErrPANKey, n+1)
		}
		if len(secret) < minPANKeyBytes {
			return nil, fmt.Errorf("%w: line %d: key has %d bytes, want at least %d", ErrPANKey, n+1, len(secret), minPANKeyBytes)
		}
		if len(k.ids) == 2 {
			return nil, fmt.Errorf("%w: line %d: more than two keys (the active one, then the previous one)", ErrPANKey, n+1)
		}
		if len(k.ids) == 1 && k.ids[0] == id {
			return nil, fmt.Errorf("%w: line %d: key id %q is used twice", ErrPANKey, n+1, id)
		}
		k.ids = append(k.ids, id)
		secrets = append(secrets, secret)
	}
	if len(k.ids) == 0 {
		return nil, fmt.Errorf("%w: no key", ErrPANKey)
	}
	active := secrets[0]
	k.pool.New = func() any { return &panMAC{h: hmac.New(sha256.New, active)} }
	if len(secrets) == 2 {
		prev := secrets[1] // makes the aliases that carry state over a rotation
		k.prev.New = func() any { return &panMAC{h: hmac.New(sha256.New, prev)} }
	}
	return k, nil
}

func decodeKey(s []byte) ([]byte, error) {
	isHex := len(s)%2 == 0
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			isHex = false
			break
		}
	}
	if isHex {
		out := make([]byte, len(s)/2)
		_, err := hex.Decode(out, s)
		return out, err
	}
	str := strings.TrimRight(string(s), "=")
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		if out, err := enc.DecodeString(str); err == nil {
			return out, nil
		}
	}
	return nil, errors.New("not hex or base64")
}

func validKeyID(id string) bool {
	if len(id) == 0 || len(id) > maxKeyIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// KeyID returns the id of the active key, the one new pseudonyms are made
// with.
func (k *PANKey) KeyID() string { return k.ids[0] }

// KeyIDs returns the ids of the keys whose pseudonyms are accepted: the
// active key's, then the previous key's if there is one.
func (k *PANKey) KeyIDs() []string { return append([]string(nil), k.ids...) }

// accepts reports whether id names one of k's keys.
func (k *PANKey) accepts(id []byte) bool {
	for _, kid := range k.ids {
		if kid == string(id) {
			return true
		}
	}
	return false
}

// appendPseudonym appends the pseudonym of card under the active key.
func (k *PANKey) appendPseudonym(dst, card []byte) []byte {
	return appendPseudonymWith(dst, card, &k.pool, k.ids[0])
}

// rotating reports whether k has a previous key (appendAlias works).
func (k *PANKey) rotating() bool { return k.prev.New != nil }

// appendAlias appends the pseudonym of card under the previous key. It
// panics if k has none (see rotating).
func (k *PANKey) appendAlias(dst, card []byte) []byte {
	return appendPseudonymWith(dst, card, &k.prev, k.ids[1])
}

func appendPseudonymWith(dst, card []byte, pool *sync.Pool, id string) []byte {
	m := pool.Get().(*panMAC)
	m.h.Reset()
	m.h.Write(card)
	sum := m.h.Sum(m.sum[:0])
	dst = append(dst, PseudonymPrefix...)
	dst = append(dst, id...)
	dst = append(dst, ':')
	dst = base64.RawURLEncoding.AppendEncode(dst, sum[:pseudonymMACBytes])
	pool.Put(m)
	return dst
}

// appendMAC appends the whole HMAC-SHA-256 of b under the active key.
func (k *PANKey) appendMAC(dst, b []byte) []byte {
	m := k.pool.Get().(*panMAC)
	m.h.Reset()
	m.h.Write(b)
	dst = append(dst, m.h.Sum(m.sum[:0])...)
	k.pool.Put(m)
	return dst
}

// Pseudonym returns the pseudonym of cardID under the active key, or cardID
// itself when it already is a pseudonym under one of k's keys. For tools and
// tests; the Decoder applies it to card_id with WithPANKey.
func (k *PANKey) Pseudonym(cardID string) string {
	if id, ok := pseudonymKeyID(cardID); ok && k.accepts([]byte(id)) {
		return cardID
	}
	var buf [maxPseudonymLen]byte
	return string(k.appendPseudonym(buf[:0], []byte(cardID)))
}

// PseudonymKeyID returns the key id of a card pseudonym
// ("p1:<key-id>:<mac>") and true, or "" and false when cardID is not one.
func PseudonymKeyID(cardID string) (string, bool) {
	return pseudonymKeyID(cardID)
}

// pseudonymKeyID returns the key id part of b if b has the pseudonym form.
// It takes a string or bytes as they are (no conversion: the score record
// path calls it for every event).
func pseudonymKeyID[T ~string | ~[]byte](b T) (T, bool) {
	var zero T
	n := len(PseudonymPrefix)
	if len(b) < n || string(b[:n]) != PseudonymPrefix {
		return zero, false
	}
	rest := b[n:]
	i := -1
	for j := 0; j < len(rest) && j <= maxKeyIDLen; j++ {
		if rest[j] == ':' {
			i = j
			break
		}
	}
	if i < 1 || !validKeyID(string(rest[:i])) {
		return zero, false
	}
	mac := rest[i+1:]
	if len(mac) != pseudonymMACChars {
		return zero, false
	}
	for j := 0; j < len(mac); j++ {
		c := mac[j]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return zero, false
		}
	}
	// A card number hidden in what looks like a pseudonym ("p1:k1:" and 24
	// characters of which 13 to 19 digits pass the Luhn check) is not one:
	// it is pseudonymised (or refused as clear_pan) like any card number.
	// A real HMAC holds such a run about once in 10^11.
	if panIn([]byte(mac)) {
		return zero, false
	}
	return rest[:i], true
}

// WithPANKey makes the Decoder replace every card_id (of events and labels)
// by its pseudonym under k's active key before the event leaves Decode, so
// that no state, record, log, snapshot or dead letter sees the card number.
// A card_id that is already a pseudonym under one of k's key ids is kept; one
// under another key id is refused with ReasonPseudonymKey. Default: no key,
// and then an event whose card_id looks like a card number is refused with
// ReasonClearPAN. With a previous key in k, every clear card_id also gets its
// pseudonym under that key in Event.CardAlias / Label.CardAlias (a second
// HMAC per event), which moves the card's state to its new pseudonym (see
// Builder.Rekeyed). The trap: the stream and the offline commands (features,
// score, train) must use the same key file, or offline rows and models no
// longer match the stream's cards; and removing the previous key before the
// cards have been seen under the new one drops the state of those not seen
// yet. k must not be nil.
func WithPANKey(k *PANKey) DecoderOption {
	return func(c *decoderConfig) error {
		if k == nil {
			return fmt.Errorf("%w: nil pan key", ErrInvalidOption)
		}
		c.pan = k
		return nil
	}
}
