package features

import "time"

// TTL returns the idle time after which an entity's state expires under
// opts (WithTTL, default 35 days). State kept beside the Builder's for the
// same cards (the stream's per-card model state) expires with it. It
// panics if an option is invalid (check opts with NewShared first).
func TTL(opts ...Option) time.Duration { return mustConfig(opts).ttl }
