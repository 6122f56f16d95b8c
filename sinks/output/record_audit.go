package output

import (
	"math"
	"slices"
	"unsafe"
)

// Threshold holds the decision thresholds of one model:
// "thresholds":{"<Name>":{"review":<Review>,"alert":<Alert>}}.
type Threshold struct {
	Name          string
	Review, Alert float64
}

// AuditRecord is a score record plus the feature vector and the thresholds
// that produced its decision, for compliance and model monitoring:
//
//	{...score record members...,
//	 "features":{"card_amount_sum_1h":512.5,"card_tx_count_1h":3},
//	 "thresholds":{"fraud":{"review":0.5,"alert":0.8}},
//	 "shadow":{"fraud":0.41},
//	 "shadow_models":{"fraud":"fraud-mlp@4 sha256:9f00aa11bb22"}}
//
// Shadow holds the scores of shadow (challenger) models, which score the
// same event but never take part in the decision; they appear only in audit
// records, never in score or alert records. ShadowModels names the model
// behind each shadow score, like Models does for the scores. The two members
// are written only when Shadow is not empty, so an audit record without
// shadow models is unchanged. A shadow model may have the name of a scoring
// model (a challenger for it): the keys live in their own objects.
//
// FeatureNames and Features are parallel slices (the Builder's names and one
// row); if their lengths differ only the common prefix is written. Feature
// values are float32 and printed with the shortest representation that
// round-trips a float32 (0.1, not 0.10000000149011612). Non-finite numbers
// are written as null.
type AuditRecord struct {
	ScoreRecord
	FeatureNames []string
	Features     []float32
	Thresholds   []Threshold
	Shadow       []NamedScore // shadow model scores; "shadow":{...}, omitted when empty
	ShadowModels []NamedModel // the shadow models' idents; "shadow_models":{...}

	keys   featureKeys // encoded `"name":` prefixes of FeatureNames
	pbKeys protoKeys   // encoded feature_names members (AppendProto)
	// the encoded "thresholds" object and the Thresholds it encodes
	// (compared on every record; rebuilt into new slices)
	thr     []Threshold
	thrJSON []byte
}

// featureKeys caches the encoded keys of a feature-name slice, which a worker
// reuses for every record; rebuilt when the names change. Each key but the
// first starts with the comma that separates it from the value before.
// Each key is a block of keyWords bytes, zero-padded, with its length, for
// putFloats to copy whole; when a key is longer than keyWords, blocks is
// nil and buf and ends hold the keys (back to back, and their ends).
type featureKeys struct {
	blocks []keyBlock
	buf    []byte
	ends   []int
	first  *string
	names  []string
}

// keyBlock is one encoded feature key, zero-padded.
type keyBlock struct {
	b [keyWords]byte
	n int
}

// featureKeys returns the encoded keys of FeatureNames, building them when
// the names are not the ones cached.
func (r *AuditRecord) featureKeys() *featureKeys {
	k := &r.keys
	if len(r.FeatureNames) == 0 {
		return k
	}
	if k.first == &r.FeatureNames[0] && equalStrings(k.names, r.FeatureNames) {
		return k
	}
	// New slices: copies of the record share the old ones.
	k.buf, k.ends, k.blocks = nil, make([]int, 0, len(r.FeatureNames)), make([]keyBlock, 0, len(r.FeatureNames))
	long := false
	for i, name := range r.FeatureNames {
		start := len(k.buf)
		if i > 0 {
			k.buf = append(k.buf, ',')
		}
		k.buf = appendString(k.buf, name)
		k.buf = append(k.buf, ':')
		k.ends = append(k.ends, len(k.buf))
		var blk keyBlock
		blk.n = copy(blk.b[:], k.buf[start:])
		k.blocks = append(k.blocks, blk)
		long = long || len(k.buf)-start > keyWords
	}
	if long {
		k.blocks = nil
	} else {
		k.buf, k.ends = nil, nil
	}
	k.first = &r.FeatureNames[0]
	k.names = slices.Clone(r.FeatureNames)
	return k
}

func equalStrings(a, b []string) bool {
	// The same backing strings (the worker's names, every record): the
	// same string headers, compared at once (39 names: one call instead
	// of a compare each).
	return sameMemory(a, b) || slices.Equal(a, b)
}

// cachedElem are the element types sameMemory may compare: strings and
// structs of strings and float64s, with no padding and nothing a pointer
// reaches but immutable string bytes. A field that is a pointer, slice, map
// or interface would make an equal header mean nothing about the value it
// points to (and a stale cache): add no type here without that check.
type cachedElem interface {
	string | Threshold | NamedModel
}

// sameMemory reports whether a and b hold the same bytes: for the cached
// element types the same values, strings by pointer and length, so false
// does not mean unequal (callers then compare the values) while true does;
// floats compare by their bits.
func sameMemory[T cachedElem](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 {
		return true
	}
	n := len(a) * int(unsafe.Sizeof(a[0]))
	return string(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(a))), n)) ==
		string(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(b))), n))
}

// AppendJSON appends the record as one JSON object (no trailing newline) and
// returns the extended slice. It does not allocate when dst has room for
// the worst case (the members, plus 74 bytes per feature: its key block and
// the longest number), which the worker's reused batch buffer reaches after
// its first records; it may use up to 48 bytes of dst's spare capacity past
// what it appends as scratch (feature keys and numbers are written there as
// whole words).
func (r *AuditRecord) AppendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	dst = r.ScoreRecord.appendFields(dst)
	return r.appendRest(dst)
}

// AppendJSONAfterScore is AppendJSON for a record whose ScoreRecord was
// just encoded, by ScoreRecord.AppendJSON, as score: it copies the score
// record's members from score instead of encoding them again (the audit
// record is the score record plus its own members), so the result is the
// same bytes as AppendJSON at about two thirds of the cost. The trap: score
// must be exactly r.ScoreRecord.AppendJSON of the current field values (the
// worker encodes both from one filled record); anything else produces an
// audit record that does not match its fields. score may lie in dst's
// backing array before len(dst) (the worker's batch buffer).
func (r *AuditRecord) AppendJSONAfterScore(dst, score []byte) []byte {
	if len(score) < 2 || score[0] != '{' || score[len(score)-1] != '}' {
		return r.AppendJSON(dst)
	}
	dst = append(dst, score[:len(score)-1]...)
	return r.appendRest(dst)
}

// keyWords is the length of the feature keys appendRest copies as whole
// words.
const keyWords = 48

// appendRest appends the audit record's own members and the closing brace.
// The features, most of the record, are written by putFloats into room
// made once: each cached key as one keyWords-byte block, each value as
// whole words (keys longer than a block, one at a time by append).
func (r *AuditRecord) appendRest(dst []byte) []byte {
	n := min(len(r.FeatureNames), len(r.Features))
	keys := r.featureKeys()
	thr := r.thresholdsJSON()
	const open, close = `,"features":{`, `},"thresholds":`
	dst = slices.Grow(dst, len(open)+n*(keyWords+floatRoom)+len(keys.buf)+len(close)+len(thr)+1)
	dst = append(dst, open...)
	if keys.blocks != nil || n == 0 {
		l := len(dst)
		dst = dst[:l+putFloats(dst[l:cap(dst)], r.Features[:n], keys.blocks[:n])]
	} else {
		// A key longer than a block: one at a time.
		start := 0
		for i, f := range r.Features[:n] {
			dst = append(dst, keys.buf[start:keys.ends[i]]...)
			start = keys.ends[i]
			dst = appendFloat32(dst, f)
		}
	}
	dst = append(dst, close...)
	dst = append(dst, thr...)
	if len(r.Shadow) > 0 {
		dst = appendKey(dst, "shadow", false)
		dst = appendScoreMap(dst, r.Shadow)
		dst = appendKey(dst, "shadow_models", false)
		dst = appendModelMap(dst, r.ShadowModels)
	}
	return append(dst, '}')
}

// thresholdsJSON returns the encoded "thresholds" object of r.Thresholds,
// encoding it only when they differ from the last ones encoded.
func (r *AuditRecord) thresholdsJSON() []byte {
	if r.thrJSON != nil && (sameMemory(r.thr, r.Thresholds) || equalThresholds(r.thr, r.Thresholds)) {
		return r.thrJSON
	}
	dst := make([]byte, 0, 48*len(r.Thresholds)+2)
	dst = append(dst, '{')
	for i := range r.Thresholds {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, r.Thresholds[i].Name)
		dst = append(dst, `:{"review":`...)
		dst = appendFloat(dst, r.Thresholds[i].Review, 64)
		dst = append(dst, `,"alert":`...)
		dst = appendFloat(dst, r.Thresholds[i].Alert, 64)
		dst = append(dst, '}')
	}
	r.thr, r.thrJSON = slices.Clone(r.Thresholds), append(dst, '}')
	return r.thrJSON
}

// equalThresholds reports whether a and b have the same names and the
// same threshold bits (not ==: -0 and 0 are encoded differently, and NaN
// is encoded as null every time).
func equalThresholds(a, b []Threshold) bool {
	return slices.EqualFunc(a, b, func(x, y Threshold) bool {
		return x.Name == y.Name && math.Float64bits(x.Review) == math.Float64bits(y.Review) &&
			math.Float64bits(x.Alert) == math.Float64bits(y.Alert)
	})
}
