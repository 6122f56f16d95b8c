package features

import (
	"fmt"
	"hash/maphash"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

var testSeed = maphash.MakeSeed()

// asMap returns the ids and states of t (test helper).
func (t *idTable[V]) asMap() map[string]V {
	m := make(map[string]V, t.n)
	for k, v := range t.all() {
		m[k] = v
	}
	return m
}

// inCur returns the state of id in m's current generation (zero: none).
func (m *expiryMap[V]) inCur(id string) V { v, _ := m.cur.get(m.hash(id), id); return v }

// inOld returns the state of id in m's old generation (zero: none).
func (m *expiryMap[V]) inOld(id string) V { v, _ := m.old.get(m.hash(id), id); return v }

// TestIDTableCollisions drives idTables through random sets, gets and
// deletions against a map[string], with hashes that put many ids on one
// value or on one probe run (the table must tell the ids apart by the id,
// and keep every id findable when deletions shift the runs back).
func TestIDTableCollisions(t *testing.T) {
	for _, tc := range []struct {
		name string
		hash func(string) uint64
	}{
		{"seeded", func(s string) uint64 { return idHash(maphash.String(testSeed, s)) }},
		{"all-one", func(string) uint64 { return 7 }},
		{"by-length", func(s string) uint64 { return idHash(uint64(len(s))) }},
		{"two-runs", func(s string) uint64 { return idHash(uint64(s[len(s)-1]%2) * 5) }},
		{"wrapping", func(s string) uint64 { return idHash(uint64(len(s)%3) + 1<<40 - 2) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tab idTable[*cardState]
			ref := map[string]*cardState{}
			r := rand.New(rand.NewPCG(5, 6))
			for step := range 4000 {
				id := fmt.Sprintf("c-%d", r.IntN(80))
				if r.IntN(3) == 0 {
					id += "-" + strings.Repeat("x", 40*r.IntN(2)+r.IntN(3)) // some longer than a short string
				}
				h := tc.hash(id)
				switch r.IntN(3) {
				case 0, 1:
					v := &cardState{}
					tab.set(h, id, v)
					ref[id] = v
				default:
					_, had := ref[id]
					if got := tab.del(h, id); got != had {
						t.Fatalf("step %d: del(%q) = %v, want %v", step, id, got, had)
					}
					delete(ref, id)
				}
				if step%40 != 0 {
					continue
				}
				if tab.len() != len(ref) {
					t.Fatalf("step %d: len %d, want %d", step, tab.len(), len(ref))
				}
				for k, v := range ref {
					if got, ok := tab.get(tc.hash(k), k); !ok || got != v {
						t.Fatalf("step %d: get(%q) = %p %v, want %p", step, k, got, ok, v)
					}
				}
				if got := tab.asMap(); !maps.Equal(got, ref) {
					t.Fatalf("step %d: all yields %d ids, want %d", step, len(got), len(ref))
				}
				if _, ok := tab.get(tc.hash("absent"), "absent"); ok {
					t.Fatalf("step %d: an id never set is found", step)
				}
			}
		})
	}
}

// TestExpiryMapCollisions runs expiryMaps through gets, puts, renames,
// rotations and capacity evictions with one hash for every id (a test
// seed cannot make that: the map's hash is replaced for the test), and
// checks that the states held and the evictions are those of the same
// run with the map's own hash.
func TestExpiryMapCollisions(t *testing.T) {
	run := func(collide bool) (held map[string]int64, evicted []string, dropped [2]uint64) {
		m := newExpiryMap[*cardState](60)
		if collide {
			m.testHash = func(string) uint64 { return 3 }
		}
		m.limit(40, true)
		r := rand.New(rand.NewPCG(7, 8))
		now := int64(0)
		for range 3000 {
			now += int64(r.IntN(4))
			m.tick(now)
			id := fmt.Sprintf("c-%d", r.IntN(60))
			switch c, ok := m.get(id); {
			case ok:
				c.s.maxTS = now
			case r.IntN(10) == 0 && m.len() > 0:
				if _, ok := m.get("r-" + id); !ok {
					m.put(id, &cardState{s: series{maxTS: now}})
					m.rename(id, "r-"+id)
				}
			default:
				m.put(id, &cardState{s: series{maxTS: now}})
			}
		}
		held = map[string]int64{}
		for _, gen := range [2]*idTable[*cardState]{&m.cur, &m.old} {
			for k, v := range gen.all() {
				held[k] = v.lastSeen()
			}
		}
		return held, m.evicted, [2]uint64{m.droppedTTL, m.droppedCap}
	}
	wantHeld, wantEv, wantDropped := run(false)
	gotHeld, gotEv, gotDropped := run(true)
	if !maps.Equal(gotHeld, wantHeld) || !slices.Equal(gotEv, wantEv) || gotDropped != wantDropped {
		t.Fatalf("with collisions: %d held, %d evicted, dropped %v; want %d, %d, %v",
			len(gotHeld), len(gotEv), gotDropped, len(wantHeld), len(wantEv), wantDropped)
	}
	if len(wantEv) == 0 || wantDropped[0] == 0 {
		t.Fatalf("the run evicted %d and dropped %v: it tests neither capacity nor TTL", len(wantEv), wantDropped)
	}
}

// sameExpiry reports whether a and b hold the same states under the same
// ids in the same generations, with the same clocks, capacity heaps and
// counters: reflect.DeepEqual but for the seeds, which differ from map to
// map, and the layout of the tables, which follows from them.
func sameExpiry[V expiring](a, b *expiryMap[V]) bool {
	if !reflect.DeepEqual(a.cur.asMap(), b.cur.asMap()) || !reflect.DeepEqual(a.old.asMap(), b.old.asMap()) {
		return false
	}
	x, y := *a, *b
	for _, m := range []*expiryMap[V]{&x, &y} {
		m.cur, m.old, m.seed, m.testHash = idTable[V]{}, idTable[V]{}, maphash.Seed{}, nil
	}
	return reflect.DeepEqual(x, y)
}
