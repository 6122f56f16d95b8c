package stream

// placement maps a Kafka partition to the worker that scores it: partition
// p goes to worker p mod n, of n workers. It is the only place that
// computes it. With at least as many workers as partitions each worker
// scores at most one partition; with fewer, partitions share workers evenly
// in number (not in rate). State belongs to partitions (partState), not to
// workers, so the placement may change between runs (another --workers)
// without moving state; a worker holds only its sequential models' layout
// (seqLayout), which a partition's states take from the worker that scores
// it.
type placement int

// worker returns the index of the worker that scores partition part (>= 0).
func (n placement) worker(part int) int { return part % int(n) }

// place returns the stage's placement of partitions on its workers.
func (s *stage) place() placement { return placement(len(s.workers)) }
