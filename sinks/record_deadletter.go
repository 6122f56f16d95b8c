package sinks

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// MaxDeadLetterValue is the largest original value a dead-letter record
// carries whole (512 KiB, 683 KiB in base64, under Kafka's default 1 MiB
// message limit). A longer value is cut to this many bytes and the record
// adds "value_truncated":true, "value_size" (the original length) and
// "value_sha256" (of the whole original), so an oversized poison message can
// never make its own dead letter unpublishable.
const MaxDeadLetterValue = 512 << 10

// DeadLetterRecord describes an input message that could not be processed,
// with its original bytes, so it can be inspected and replayed:
//
//	{"topic":"transactions","partition":3,"offset":1042,"key":"c-42",
//	 "key_b64":"Yy00Mg==","reason":"malformed_json",
//	 "error":"features: decode event: amount: ...","value_b64":"eyJ0eF9pZCI6...",
//	 "dead_lettered_at":"2026-11-28T15:04:05.123Z"}
//
// "key" is the key as a JSON string for people and queries (invalid UTF-8
// shows as U+FFFD, so it may be lossy); "key_b64" and "value_b64" are the
// exact bytes in standard base64 with padding. A nil key or value is
// written as "". Reason is a stable machine-readable code (the features
// Reason* constants); Error is the human-readable text. Every member is
// always present.
type DeadLetterRecord struct {
	Topic      string
	Partition  int
	Offset     int64
	Key, Value []byte
	Reason     string
	Error      string
	At         time.Time
}

// AppendJSON appends the record as one JSON object (no trailing newline) and
// returns the extended slice. It does not allocate when dst has capacity.
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
	dst = appendKey(dst, "reason", false)
	dst = appendString(dst, r.Reason)
	dst = appendKey(dst, "error", false)
	dst = appendString(dst, r.Error)
	dst = appendKey(dst, "value_b64", false)
	if len(r.Value) > MaxDeadLetterValue {
		dst = appendBase64(dst, r.Value[:MaxDeadLetterValue])
		sum := sha256.Sum256(r.Value)
		dst = append(dst, `,"value_truncated":true,"value_size":`...)
		dst = strconv.AppendInt(dst, int64(len(r.Value)), 10)
		dst = append(dst, `,"value_sha256":"`...)
		dst = hex.AppendEncode(dst, sum[:])
		dst = append(dst, '"')
	} else {
		dst = appendBase64(dst, r.Value)
	}
	dst = appendKey(dst, "dead_lettered_at", false)
	dst = appendTime(dst, r.At)
	return append(dst, '}')
}
