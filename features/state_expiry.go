package features

import "strings"

// expiring is implemented by entity states kept in an expiryMap: pointers
// (compared by identity).
type expiring interface {
	comparable
	// lastSeen returns the newest event time applied to the entity (Unix ns).
	// It never decreases (the capacity heap relies on it).
	lastSeen() int64
}

// expiryMap holds entity states keyed by id and forgets entities idle for
// longer than ttl of event time. It keeps two generations of Go maps and
// rotates them every ttl of event time (Go maps never shrink, so deleting
// would not return memory): an entity touched since the last rotation is in
// cur; one touched only before it is in old and moves back to cur when seen
// again — unless it has been idle for more than ttl, in which case it is
// dropped. old is discarded at the next rotation, so an idle entity's memory
// is released between one and two ttl after its last event, and a state idle
// for more than ttl is never used.
//
// Not safe for concurrent use.
type expiryMap[V expiring] struct {
	cur, old map[string]V
	ttl      int64
	clock    int64 // newest event time seen
	rotateAt int64
	started  bool

	// Capacity (limit): when max > 0, put first evicts the least recently
	// seen entities in event time until fewer than max are held.
	max     int
	lru     lruHeap[V]
	keep    bool     // record the keys evicted for capacity in evicted
	evicted []string // keys evicted for capacity since clearEvicted (when keep)
	// Entities dropped so far: by the TTL (generation discarded, or found
	// expired by get) and by the capacity.
	droppedTTL, droppedCap uint64
}

func newExpiryMap[V expiring](ttl int64) expiryMap[V] {
	return expiryMap[V]{cur: make(map[string]V), ttl: ttl}
}

// tick advances the event-time clock and rotates the generations when due.
func (m *expiryMap[V]) tick(now int64) {
	if !m.started {
		m.started = true
		m.clock = now
		m.rotateAt = now + m.ttl
		return
	}
	if now <= m.clock {
		return
	}
	m.clock = now
	if now < m.rotateAt {
		return
	}
	if now >= m.rotateAt+m.ttl {
		m.droppedTTL += uint64(len(m.old) + len(m.cur))
		m.old = nil // everything is older than ttl
	} else {
		m.droppedTTL += uint64(len(m.old))
		m.old = m.cur
	}
	m.cur = make(map[string]V, len(m.cur)/2)
	m.rotateAt = now + m.ttl
	if m.max > 0 && m.heapGarbage() {
		m.rebuild() // release the states the rotation dropped
	}
}

// get returns the live state for key, or ok == false when there is none (or
// it has expired).
func (m *expiryMap[V]) get(key string) (v V, ok bool) {
	var zero V
	if v, ok = m.cur[key]; ok {
		if m.clock-v.lastSeen() > m.ttl { // only after late events
			delete(m.cur, key)
			m.droppedTTL++
			return zero, false
		}
		return v, true
	}
	if v, ok = m.old[key]; ok {
		delete(m.old, key)
		if m.clock-v.lastSeen() > m.ttl {
			m.droppedTTL++
			return zero, false
		}
		m.cur[strings.Clone(key)] = v
		return v, true
	}
	return zero, false
}

// peek is a read-only get: it returns the state get would return after
// tick(now), without advancing the clock, rotating, or moving or deleting
// entries. (A state get would drop, because a rotation due at now would
// discard its generation, is always one idle for more than ttl at now.)
func (m *expiryMap[V]) peek(key string, now int64) (v V, ok bool) {
	clock := now
	if m.started {
		clock = max(m.clock, now)
	}
	if v, ok = m.cur[key]; !ok {
		v, ok = m.old[key]
	}
	if !ok || clock-v.lastSeen() > m.ttl {
		var zero V
		return zero, false
	}
	return v, true
}

// put stores a new state under a copy of key (keys of decoded events share
// one backing string with the rest of the event; storing them as-is would pin
// it).
//
// With a capacity (limit), put first evicts the least recently seen
// entities until fewer than the capacity are held.
func (m *expiryMap[V]) put(key string, v V) {
	k := strings.Clone(key)
	if m.max > 0 {
		for m.len() >= m.max && m.evictOne() {
		}
		m.lru.push(lruEntry[V]{ts: v.lastSeen(), key: k, v: v})
		if m.heapGarbage() {
			m.rebuild() // entries of states the TTL dropped
		}
	}
	m.cur[k] = v
}

// rename moves the state under from (which must be in cur, as after get)
// to a copy of to, keeping the capacity heap in step: the entry under from
// goes stale (evictOne skips it) and the state gets one under its new key,
// so a renamed state can still be evicted.
func (m *expiryMap[V]) rename(from, to string) {
	v := m.cur[from]
	delete(m.cur, from)
	k := strings.Clone(to)
	m.cur[k] = v
	if m.max > 0 {
		m.lru.push(lruEntry[V]{ts: v.lastSeen(), key: k, v: v})
	}
}

// limit sets the capacity: max entities (0: unbounded); keep makes the map
// record the keys it evicts for capacity (evicted). The heap is rebuilt
// from the entities held, and entities beyond max are evicted at once (a
// snapshot restored under a smaller capacity).
func (m *expiryMap[V]) limit(max int, keep bool) {
	m.max, m.keep = max, keep
	m.lru = nil
	if max <= 0 {
		return
	}
	m.rebuild()
	for m.len() > max && m.evictOne() {
	}
}

// heapGarbage reports whether the heap holds enough entries of states no
// longer held (dropped by the TTL) to rebuild it: a fifth of its entries
// (they pin their states' memory), so that a rebuild costs O(1) amortized
// per state dropped.
func (m *expiryMap[V]) heapGarbage() bool { n := m.len(); return len(m.lru) > n+n/4+64 }

// rebuild makes the heap anew from the entities held.
func (m *expiryMap[V]) rebuild() {
	h := m.lru[:0]
	for _, gen := range [2]map[string]V{m.cur, m.old} {
		for k, v := range gen {
			h = append(h, lruEntry[V]{ts: v.lastSeen(), key: k, v: v})
		}
	}
	clear(h[len(h):cap(h)]) // release the states of dropped entries
	m.lru = h
	m.lru.init()
}

// evictOne evicts the held entity least recently seen in event time (the
// smallest lastSeen, ties broken by the smaller key), and reports whether
// there was one. Heap entries are lower bounds of their entity's lastSeen
// (it only grows): an entry found stale is pushed again with the current
// value, one whose state is no longer held is dropped; so the entity
// evicted is exactly the least recently seen, whatever the order in which
// the states were put and touched.
func (m *expiryMap[V]) evictOne() bool {
	for len(m.lru) > 0 {
		e := m.lru.pop()
		var gen map[string]V
		switch {
		case m.cur[e.key] == e.v:
			gen = m.cur
		case m.old != nil && m.old[e.key] == e.v:
			gen = m.old
		default:
			continue // dropped by the TTL (or replaced)
		}
		if ts := e.v.lastSeen(); ts > e.ts {
			e.ts = ts
			m.lru.push(e)
			continue
		}
		delete(gen, e.key)
		m.droppedCap++
		if m.keep {
			m.evicted = append(m.evicted, e.key)
		}
		return true
	}
	return false
}

// lruEntry is a capacity-heap entry: a state, its key, and a lower bound of
// its lastSeen.
type lruEntry[V expiring] struct {
	ts  int64
	key string
	v   V
}

func (a *lruEntry[V]) less(b *lruEntry[V]) bool {
	return a.ts < b.ts || (a.ts == b.ts && a.key < b.key)
}

// lruHeap is a binary min-heap of lruEntry by (ts, key).
type lruHeap[V expiring] []lruEntry[V]

func (h *lruHeap[V]) init() {
	for i := len(*h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *lruHeap[V]) push(e lruEntry[V]) {
	*h = append(*h, e)
	s := *h
	i := len(s) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !s[i].less(&s[p]) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *lruHeap[V]) pop() lruEntry[V] {
	s := *h
	e := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s[n] = lruEntry[V]{}
	*h = s[:n]
	h.down(0)
	return e
}

func (h lruHeap[V]) down(i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		j := l
		if r := l + 1; r < n && h[r].less(&h[l]) {
			j = r
		}
		if !h[j].less(&h[i]) {
			return
		}
		h[i], h[j] = h[j], h[i]
		i = j
	}
}

// len returns the number of entities held (live or awaiting release).
func (m *expiryMap[V]) len() int { return len(m.cur) + len(m.old) }
