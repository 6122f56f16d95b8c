package output

import (
	"encoding/hex"
	"strconv"
	"time"
	"unicode/utf8"
)

// DeadLetterRecord describes an input message that could not be processed.
// It never holds the message itself, which may carry a card number or data
// outside the event contract (a CVV): only what the caller derived from it
// as safe to keep (the stream uses the features Decoder's redaction):
//
//	{"topic":"transactions","partition":3,"offset":1042,"key":"p1:k2:Xq…",
//	 "key_b64":"cDE6azI6WHHigKY=","reason":"invalid_amount",
//	 "error":"features: decode event: amount: negative amount",
//	 "value_size":212,"value_hmac_sha256":"9f86d0…","value_hmac_key_id":"k2",
//	 "value_redacted":{"tx_id":"t-1","card_id":"p1:k2:Xq…","amount":-3},
//	 "dead_lettered_at":"2026-11-28T15:04:05.123Z"}
//
// "key" is the key as a JSON string for people and queries (invalid UTF-8
// shows as U+FFFD, so it may be lossy); "key_b64" is its exact bytes in
// standard base64 with padding; a nil key is written as "". "value_size" is
// the original message's length. The digest of the whole original message,
// for finding it upstream, is "value_sha256" (plain SHA-256) or
// "value_hmac_sha256" with "value_hmac_key_id" (keyed, when DigestKeyID is
// set), in lower-case hex; neither member is written when Digest is nil.
// "value_redacted" is written only when Redacted is set, as is: it must be
// one valid JSON object. Reason is a stable machine-readable code (the
// features Reason* constants); Error is the human-readable text (it must not
// hold message content). The other members are always present, but
// "key_size", written only when the caller cut the key to MaxDeadLetterKey
// bytes (KeySize is then the original length).
//
// A dead letter must always fit the dead-letter topic, whatever the input
// (a poison message must never become a record the broker refuses): the
// key is cut by the caller to MaxDeadLetterKey bytes, the error text here
// to MaxDeadLetterError bytes, and the redacted value is bounded by its
// maker (the features Decoder: contract members only, long values
// replaced). The largest record is a few tens of KiB, far below Kafka's
// default 1 MiB message limit and NATS's default 1 MiB payload.
type DeadLetterRecord struct {
	Topic       string
	Partition   int
	Offset      int64
	Key         []byte // as it may be kept (the stream cuts, pseudonymises or drops it)
	KeySize     int    // the original key's length when Key was cut, else 0
	Reason      string
	Error       string
	Size        int    // length of the original message in bytes
	Digest      []byte // of the original message; nil: none
	DigestKeyID string // "" for SHA-256, else the id of the HMAC key
	Redacted    []byte // a JSON object, or nil
	At          time.Time
}

// Bounds of a dead-letter record's members (see DeadLetterRecord).
const (
	// MaxDeadLetterKey is the longest input key a dead letter keeps, in
	// bytes; the stream cuts longer keys (and keys the record with the cut
	// key too) and records the original length in "key_size".
	MaxDeadLetterKey = 256
	// MaxDeadLetterError is the longest error text a dead letter keeps, in
	// bytes; longer texts are cut at a character boundary and end in "…".
	MaxDeadLetterError = 1024
)

// cutText returns s cut to at most n bytes at a UTF-8 character boundary,
// ending in "…" when cut.
func cutText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n - len("…")
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// AppendJSON appends the record as one JSON object (no trailing newline) and
// returns the extended slice. It does not allocate when dst has capacity;
// it may use up to 24 bytes of dst's spare capacity past what it appends
// as scratch (numbers are written there and moved down).
func (r *DeadLetterRecord) AppendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	dst = appendKey(dst, "topic", true)
	dst = appendString(dst, r.Topic)
	dst = appendKey(dst, "partition", false)
	dst = strconv.AppendInt(dst, int64(r.Partition), 10)
	dst = appendKey(dst, "offset", false)
	dst = strconv.AppendInt(dst, r.Offset, 10)
	dst = appendKey(dst, "key", false)
	dst = appendString(dst, r.Key)
	dst = appendKey(dst, "key_b64", false)
	dst = appendBase64(dst, r.Key)
	if r.KeySize > len(r.Key) {
		dst = appendKey(dst, "key_size", false)
		dst = strconv.AppendInt(dst, int64(r.KeySize), 10)
	}
	dst = appendKey(dst, "reason", false)
	dst = appendString(dst, r.Reason)
	dst = appendKey(dst, "error", false)
	dst = appendString(dst, cutText(r.Error, MaxDeadLetterError))
	dst = appendKey(dst, "value_size", false)
	dst = strconv.AppendInt(dst, int64(r.Size), 10)
	if r.Digest != nil {
		if r.DigestKeyID == "" {
			dst = appendKey(dst, "value_sha256", false)
		} else {
			dst = appendKey(dst, "value_hmac_sha256", false)
		}
		dst = append(dst, '"')
		dst = hex.AppendEncode(dst, r.Digest)
		dst = append(dst, '"')
		if r.DigestKeyID != "" {
			dst = appendKey(dst, "value_hmac_key_id", false)
			dst = appendString(dst, r.DigestKeyID)
		}
	}
	if r.Redacted != nil {
		dst = appendKey(dst, "value_redacted", false)
		dst = append(dst, r.Redacted...)
	}
	dst = appendKey(dst, "dead_lettered_at", false)
	dst = appendTime(dst, r.At)
	return append(dst, '}')
}
