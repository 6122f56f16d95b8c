package wire

import (
	"fmt"
	"strings"

	"github.com/streamscore/streamscore/features"
)

// Mapping says which record field holds each field of the event and label
// contract: by contract name ("tx_id", "ts", "card_id", "terminal_id",
// "amount", "currency", "mcc", "channel", "country", "lat", "lon", and for
// labels "fraud", "tx_ts"), the record field's name, or a dotted path into
// nested records or messages ("payment.amount"). A contract field not in
// the mapping is read from the record field of its own name; "-" leaves an
// optional one unread.
type Mapping map[string]string

// paths is a checked Mapping: per contract field, its path (nil: unread).
type paths [features.NumRecordFields][]string

// compileMapping checks m and fills in the defaults.
func compileMapping(m Mapping) (paths, error) {
	var p paths
	byName := map[string]features.RecordField{}
	for f := range features.NumRecordFields {
		byName[f.String()] = f
		p[f] = []string{f.String()}
	}
	for name, path := range m {
		f, ok := byName[name]
		if !ok {
			return p, fmt.Errorf("%w: mapping of %q: not a field of the event or label contract", ErrInvalidOption, name)
		}
		if path == "-" {
			if features.RequiredEvent(f) || features.RequiredLabel(f) {
				return p, fmt.Errorf("%w: mapping of %q: a required field cannot be left unread", ErrInvalidOption, name)
			}
			p[f] = nil
			continue
		}
		segs := strings.Split(path, ".")
		for _, s := range segs {
			if s == "" {
				return p, fmt.Errorf("%w: mapping of %q: %q is not a field name or dotted path", ErrInvalidOption, name, path)
			}
		}
		p[f] = segs
	}
	for _, r := range []role{eventRole, labelRole} {
		if _, err := p.trie(r); err != nil {
			return p, err
		}
	}
	return p, nil
}

// Check reports whether m names contract fields and maps them to
// well-formed paths, none the prefix of another. Errors wrap
// ErrInvalidOption.
func (m Mapping) Check() error {
	_, err := compileMapping(m)
	return err
}

// trie is the mapped paths of one role (event or label), by record field
// name: a leaf is read into its target, an inner node descends into a
// nested record or message.
type trie struct {
	target features.RecordField // -1: inner node
	kids   map[string]*trie
}

// role is what a plan decodes: events or labels.
type role struct {
	label  bool
	fields []features.RecordField
}

var (
	eventRole = role{fields: features.EventFields}
	labelRole = role{label: true, fields: features.LabelFields}
)

func (r role) required(f features.RecordField) bool {
	if r.label {
		return features.RequiredLabel(f)
	}
	return features.RequiredEvent(f)
}

// trie builds the role's trie; it fails if a path is both a leaf and a
// prefix of another.
func (p *paths) trie(r role) (*trie, error) {
	root := &trie{target: -1, kids: map[string]*trie{}}
	for _, f := range r.fields {
		segs := p[f]
		if segs == nil {
			continue
		}
		n := root
		for i, s := range segs {
			k := n.kids[s]
			if k == nil {
				k = &trie{target: -1}
				n.kids[s] = k
			}
			if i == len(segs)-1 {
				if k.target >= 0 || k.kids != nil {
					return nil, fmt.Errorf("%w: mapping of %q: %q is mapped twice or is a prefix of another path", ErrInvalidOption, f, strings.Join(segs, "."))
				}
				k.target = f
			} else {
				if k.target >= 0 {
					return nil, fmt.Errorf("%w: mapping of %q: %q goes through a mapped field", ErrInvalidOption, f, strings.Join(segs, "."))
				}
				if k.kids == nil {
					k.kids = map[string]*trie{}
				}
			}
			n = k
		}
	}
	return root, nil
}

// mismatch is a schema_mismatch error.
func mismatch(format string, args ...any) error {
	return &features.DecodeError{Reason: features.ReasonSchemaMismatch, Err: fmt.Errorf(format, args...)}
}

// checkFound fails when a required field of the role was not found in the
// writer schema.
func checkFound(r role, found uint32, p *paths) error {
	for _, f := range r.fields {
		if r.required(f) && found&(1<<f) == 0 {
			return &features.DecodeError{Reason: features.ReasonSchemaMismatch, Field: f.String(),
				Err: fmt.Errorf("the writer schema has no field %q (mapped to %s)", strings.Join(p[f], "."), f)}
		}
	}
	return nil
}
