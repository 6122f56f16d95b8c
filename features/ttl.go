package features

import "time"

// TTL returns the idle time after which an entity's state expires (WithTTL,
// default 35 days). State kept beside the Builder's for the same cards (the
// stream's per-card model state) expires with it.
func (s *Shared) TTL() time.Duration { return s.cfg.ttl }

// MaxCards returns the card cap the Shared was made with (WithMaxCards;
// 0: unbounded), for callers that share it out among Builders.
func (s *Shared) MaxCards() int { return s.cfg.maxCards }
