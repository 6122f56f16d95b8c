package features

// Test hooks for the external tests (package features_test, which may
// import features/synth).

// WithSpecEngine is WithSpec forced onto the spec engine, also for a spec
// equal to DefaultSpec.
func WithSpecEngine(spec *Spec) Option { return withSpec(spec, true) }

// SharedEntities returns the entity states s holds: terminals, and with a
// spec the states of every entity map.
func SharedEntities(s *Shared) int {
	n := 0
	for i := range s.stripes {
		st := &s.stripes[i]
		st.mu.Lock()
		n += st.m.len()
		for k := range st.spec {
			n += st.spec[k].len()
		}
		st.mu.Unlock()
	}
	return n
}

// CardGenerations returns the number of card states of b in the current
// and in the old generation of its expiry map.
func CardGenerations(b *Builder) (cur, old int) {
	if b.sp != nil {
		return len(b.sp.loc.cur), len(b.sp.loc.old)
	}
	return len(b.cards.cur), len(b.cards.old)
}

// SharedOld returns the number of entity states of s in the old
// generations of its stripes.
func SharedOld(s *Shared) int {
	n := 0
	for i := range s.stripes {
		st := &s.stripes[i]
		st.mu.Lock()
		n += len(st.m.old)
		for k := range st.spec {
			n += len(st.spec[k].old)
		}
		st.mu.Unlock()
	}
	return n
}

// RaceEnabled reports whether the tests run under the race detector.
const RaceEnabled = raceEnabled

// MustShared is NewShared for the tests' options, which are valid: it
// panics on error (a test failure).
func MustShared(opts ...Option) *Shared {
	s, err := NewShared(opts...)
	if err != nil {
		panic(err)
	}
	return s
}

// MustBuilder is NewBuilder for the tests' options: it panics on error.
func MustBuilder(s *Shared, opts ...Option) *Builder {
	b, err := NewBuilder(s, opts...)
	if err != nil {
		panic(err)
	}
	return b
}

// MustDecoder is NewDecoder for the tests' options: it panics on error.
func MustDecoder(opts ...DecoderOption) *Decoder {
	d, err := NewDecoder(opts...)
	if err != nil {
		panic(err)
	}
	return d
}
