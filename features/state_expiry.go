package features

import "strings"

// expiring is implemented by entity states kept in an expiryMap.
type expiring interface {
	// lastSeen returns the newest event time applied to the entity (Unix ns).
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
		m.old = nil // everything is older than ttl
	} else {
		m.old = m.cur
	}
	m.cur = make(map[string]V, len(m.cur)/2)
	m.rotateAt = now + m.ttl
}

// get returns the live state for key, or ok == false when there is none (or
// it has expired).
func (m *expiryMap[V]) get(key string) (v V, ok bool) {
	var zero V
	if v, ok = m.cur[key]; ok {
		if m.clock-v.lastSeen() > m.ttl { // only after late events
			delete(m.cur, key)
			return zero, false
		}
		return v, true
	}
	if v, ok = m.old[key]; ok {
		delete(m.old, key)
		if m.clock-v.lastSeen() > m.ttl {
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
func (m *expiryMap[V]) put(key string, v V) {
	m.cur[strings.Clone(key)] = v
}

// len returns the number of entities held (live or awaiting release).
func (m *expiryMap[V]) len() int { return len(m.cur) + len(m.old) }
