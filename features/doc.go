// Package features turns raw transaction events into point-in-time feature
// rows: it decodes events and labels strictly, keeps windowed per-card and
// per-terminal state in event time, and assembles one float32 row per event,
// the same way in the stream and in offline replay.
//
// # Concepts
//
// Event and Label are the input contracts (JSON; one message each). A
// Decoder decodes them with a hand-written single-pass scanner that is
// stricter than encoding/json: invalid UTF-8 anywhere, duplicate keys,
// trailing data, mistyped or null required fields are rejected, each with a
// stable machine-readable reason (the Reason* constants, carried by
// *DecodeError) for the dead-letter record. A successful Decode allocates
// once and reads the decoder's clock once; DecodeAt takes a clock reading
// made once for many messages (the stream's fetchers: one per slice).
// AppendJSON writes both types back in the same layout. Decoders of
// binary formats (features/wire: Avro, Protobuf) fill a Record field by
// field and call DecodeRecord or DecodeLabelRecord, which apply exactly the
// checks after the JSON scan (required fields, ranges, skew, lengths, card
// numbers and pseudonyms).
//
// # Card numbers
//
// No card number (PAN) leaves the Decoder in clear (PCI DSS requirement 3).
// With WithPANKey (a PANKey loaded from a key file), card_id of events and
// labels is replaced at decode by the pseudonym "p1:<key-id>:<mac>", the
// first 144 bits of HMAC-SHA-256(key, card_id) in base64url: state,
// records, logs, snapshots and dead letters only ever see the pseudonym, and
// a label reaches its card because it gets the same one. A card_id that
// already is a pseudonym under the active or the previous key's id passes as
// it is (pseudonymised upstream, or taken from this engine's records);
// under another id it is refused (ReasonPseudonymKey). Without a key, an
// event or label whose card_id holds a card number in clear is refused with
// ReasonClearPAN; with or without a key, so is one whose other string
// fields (tx_id, terminal_id, currency, mcc, channel, country) hold one. A
// card number in clear is a 13-19 digit run passing the Luhn check, plain
// or grouped as cards print it (PANIn). Members outside the contract are
// not checked: they are skipped unread and never copied anywhere.
//
// Rotation: the key file's first line is the active key, an optional second
// line the previous one. New pseudonyms are made with the active key only;
// pseudonyms under either id are accepted. While a previous key is
// configured, the Decoder also computes a clear card_id's pseudonym under it
// (Event.CardAlias, Label.CardAlias; never written anywhere), a second HMAC
// per event. The first time a card is seen that way, its state is moved
// (renamed, not copied) from the old pseudonym to the new one, wherever card
// state lives: the Builder's cards (both engines), the card's labels in the
// Shared (specs with card fraud features) and, in package stream, the card's
// sequential-model state. Peek reads the old pseudonym's state without
// moving it. So a rotation keeps every card's windows, and rows equal those
// of a run that never rotated, card_id aside; Builder.Rekeyed counts the
// cards moved. A card_id received already pseudonymised cannot be translated
// (an HMAC is not invertible), has no alias and keys the state of the
// pseudonym it carries: a card sent by one producer in clear and by another
// under the old pseudonym gets two histories after the rotation. A label under the old pseudonym that arrives
// after its card moved is still read by the card's events (by both
// pseudonyms, a tx_id once) and moved by the next one; only a correction
// (fraud=false) under the old pseudonym of a label already moved finds
// nothing to withdraw. Score and audit records name the key in
// "card_key_id".
//
// A dead letter never keeps the message: AppendRedactedEvent and
// AppendRedactedLabel keep only the contract's members, with card_id
// pseudonymised (with a key) and any value holding a card number replaced;
// AppendDigest gives the HMAC-SHA-256 of the whole message under the key (or
// its SHA-256 without one, none when it holds a card number in clear);
// AppendSafeKey gives the message key as it may be kept.
//
// State is kept per entity as a series: a time-ordered deque of (event time,
// amount) covering the longest window plus the lateness allowance, with a
// running aggregate (count, sum, sum of squares) per window and head indexes,
// so an in-order event costs O(1) amortized per window. Windows are event-time
// intervals (t-offset-length, t-offset] relative to each event's own time t:
// the default ones are 1h, 1d, 7d and 30d ending at t (and including the
// event), and for terminals 1d, 7d and 30d ending 7 days before t. Aggregates are
// exact (they equal a recomputation from scratch, up to float64 rounding),
// except where a spec asks otherwise: windows with tiles (bounded memory,
// error bound in the spec doc) and distinct counts above their cap (a
// sketch). An out-of-order event up to
// WithMaxLateness (default 1h) behind its entity's newest event is inserted
// at its event time and its own windows are answered by a short scan; a
// later one is scored against the retained state and not inserted, so it
// cannot corrupt the state; Builder.Late counts such events, and
// Builder.LastLate tells whether the event just updated (or peeked) was one.
// Idle entities expire after WithTTL (default 35 days of event time), by
// rotating two generations of maps (Go maps never shrink).
//
// Memory is bounded by caps (all unbounded by default; the engine's flags
// set them): WithMaxCards and WithMaxTerminals evict the entity least
// recently seen in event time (smallest newest-event time, ties by id:
// exact, and independent of arrival order, via a lazy min-heap beside the
// maps) when a new one would exceed the cap; WithMaxPoints drops an
// entity's oldest events beyond its cap from its windows; the Decoder's
// WithMaxFieldBytes refuses long ids (ReasonFieldTooLong). Builder.Stats
// and Shared.Stats count the states held and the evictions by reason (ttl,
// cap); Builder.EvictedCards names the cards an Update evicted, so that
// state kept beside a Builder's follows them.
//
// Card state is owned by one Builder (one per worker, which owns the
// partitions, hence the cards, it is fed); terminal state, which every worker
// touches, lives in a Shared behind striped locks (WithStripes, default 64).
// Labels (delayed fraud feedback) are applied to the Shared with ApplyLabel
// and feed the terminal fraud features.
//
// Update applies an event exactly once. For an event that may already have
// been applied (a re-delivery after a consumer-group rebalance, of messages
// applied but not yet committed; the stream remembers the highest offset it
// applied per partition), call Peek instead: it writes the row Update wrote
// for the event without changing any state (no window, expiry clock, TTL
// generation, label or sweep counter), reading terminals under their stripe
// lock. An event counts as already applied to its card (terminal) when the
// state holds a point at its time with its amount (states keep no event ids);
// it is then read from the state as it is, counted once. The row equals
// Update's whenever no other event at or before its time has reached the same
// card or terminal since, and the event is within the max lateness of the
// entity's newest; window sums and means may then differ from Update's by
// float64 rounding, except right after Update (bit-identical). Country change
// and geo velocity are reproduced for a card's newest event only (the card
// remembers them); for an older re-delivered one they are 0. An event not in
// the state (never applied, beyond the lateness, evicted or expired) is
// scored as Update's "scored but not inserted" path does, so Peek is always
// safe.
//
// A row can also be computed in two halves, for a deployment where the
// state of the shared entities (terminals; with a spec, every entity other
// than card_id) is kept by one stage and card state by another: Shared.Apply
// applies an event to the shared entities and writes only their columns
// (Shared.Columns), and Builder.UpdateLocal applies it to its card (moving
// it on a PAN-key rotation, evicting under WithMaxCards) and writes every
// other column (card features, amount, calendar), taking Apply's late flag
// for Late and LastLate. Shared.Peek and Builder.PeekLocal are Peek's
// halves; Shared.ApplyLabelShared and ApplyLabelLocal are ApplyLabel's (the
// first returns the transaction time it placed the label at, which only
// the terminals' history can tell: forward the label with it). Apply then
// UpdateLocal write exactly Update's row, bit for bit, and leave the same
// state, on one Shared or on one per stage (TestSplitMatchesUpdate, both
// engines). Apply
// paces the sweeps of the shared entities' expiry clocks by the events it
// applies, so a stage that applies the events of every partition in
// CompareEvents order sweeps as Replay's single Builder does.
//
// Features can also be declared: a Spec (YAML, ParseSpec; the embedded
// DefaultSpec describes the default features below) lists the row's features,
// each an aggregation (count, sum, mean, min, max, std, distinct, last,
// since_prev, ratio, zscore, changed, geo_velocity, fraud_count, fraud_rate,
// value and calendar flags) of an input field over an event-time window
// (t-offset-length, t-offset] per entity key (card_id, terminal_id, currency,
// mcc, channel or country). WithSpec makes a Builder compute a spec with the
// spec-driven engine (builder_spec.go), with the same lateness, expiry,
// label and Peek rules. Card state stays in the Builder, and the state of
// every other entity and all labels stays in the Shared. Window aggregates
// are exact, except for a feature with `tiles: N` (count, sum, mean, std,
// min, max, fraud_count, fraud_rate): it keeps N epoch-aligned time tiles of
// width window/N per entity, not every event (memory O(N) whatever the
// traffic), and answers from the tiles overlapping the window, each whole;
// a count over-counts by at most the events of the oldest tile (and, for an
// offset window or an out-of-order event, of the newest), about 1/N
// relative under uniform arrival (TestTilesBound, window_tiles.go). A distinct count is exact up to its cap, then a k-minimum-values
// sketch (relative standard error <= 1/sqrt(cap-2)). The hand-written
// Builder is the engine's specialisation for DefaultSpec: it runs without
// WithSpec, and for a spec equal to DefaultSpec. On random streams its rows
// are bit-identical to the engine's for Update and Peek
// (TestSpecDefaultMatchesBuilder). The format, with an example per
// aggregation, is in docs/features.md.
//
// Replay runs the same code over files (ReadEvents, ReadLabels: JSON Lines)
// to produce training rows: events in one total order, by TS then tx_id
// (CompareEvents: the order in which the stream applies state shared
// across partitions), each label (by TS then tx_id, CompareLabels) applied
// as soon as its TS is at or before the next event's.
//
// # Snapshots
//
// State can outlive a process: Shared.WriteState and Builder.WriteState
// write it (binary, streamed: a 64 KiB buffer, never the whole state in
// memory), and Shared.ReadState and Builder.ReadState read it back into a
// Shared and Builders built with the same options. A restored process
// writes bit-identical rows (Update and Peek, late events, label duplicates
// and corrections, TTL expiry) to those the writing process would have
// written had it never stopped, provided the snapshots are one consistent
// cut (no Update or ApplyLabel between the writes) and the stripe count is
// the same; with another stripe count, idle entities may expire at a
// slightly different time. Everything that influences future rows is kept:
// every entity's points, running aggregates, tiles, labels and head, the
// expiry maps' clocks and generations, the Shared's hash key and the
// Builder's counters.
//
// A snapshot is a container of the module's internal/frame: a header
// (magic "SSFSTATE", format version, kind), a body in length-prefixed
// frames, and a CRC-32C of everything before it. The
// body begins with a fingerprint of what the state depends on (engine, TTL,
// max lateness, every feature's definition, the windows of every entity);
// ReadState refuses a snapshot of other options with an error naming the
// difference. Every error about the snapshot (options, version, truncation,
// checksum, a corrupt length or structure) wraps ErrState, and leaves the
// receiver empty: never a panic, never a partial state. ReadState reads
// exactly the snapshot's bytes, so snapshots may be concatenated (the
// Shared's, then each Builder's) in one file. Caps are not in the
// fingerprint: a snapshot read under smaller caps is cut down to them.
//
// # Features
//
// Names returns the default features in row order; names are stable. All
// values are float32 and always finite (non-finite intermediates are clamped
// to ±MaxFloat32, NaN becomes 0).
//
//	amount_log1p                      log1p(amount)
//	card_tx_count_{1h,1d,7d,30d}      card transactions in the window, this one included
//	card_amount_sum_{1h,1d,7d,30d}    sum of their amounts
//	card_amount_mean_{1h,1d,7d,30d}   mean of their amounts
//	card_secs_since_prev_log1p        log1p(seconds since the card's previous transaction in
//	                                  event time); SinceFirstSeen (-1) when none is known
//	card_amount_ratio_30d             amount / mean of the card's other transactions of the
//	                                  last 30d (mean floored at 0.01); 1 when there are none
//	card_amount_zscore_30d            (amount - mean) / std over the card's other transactions
//	                                  of the last 30d (population std floored at 0.01); 0 with
//	                                  fewer than 2
//	card_country_changed              1 when country differs from the previous transaction's
//	                                  (both present), else 0
//	card_geo_velocity_kmh             great-circle km from the previous transaction / hours
//	                                  between them (at least 1 s); 0 unless both have lat/lon
//	terminal_tx_count_{1h,...,30d}    terminal transactions in the window, this one included
//	terminal_amount_mean_{1h,...,30d} mean of their amounts
//	terminal_fraud_count_7d_lag7d     frauds among the terminal's transactions in
//	                                  (t-14d, t-7d] (transaction time), label TS <= t
//	terminal_fraud_rate_7d_lag7d      that count / terminal transactions in (t-14d, t-7d],
//	                                  capped at 1; 0 without transactions
//	terminal_fraud_count_30d_lag7d    the same over (t-37d, t-7d]
//	terminal_fraud_rate_30d_lag7d
//	hour_sin, hour_cos                hour of day (UTC, fractional) on the unit circle
//	is_weekend                        1 on Saturday and Sunday (UTC)
//	is_night                          1 when the UTC hour is <= 6
//	terminal_tx_count_1d_lag7d        terminal transactions in (t-8d, t-7d]
//	terminal_tx_count_7d_lag7d        terminal transactions in (t-14d, t-7d]
//	terminal_tx_count_30d_lag7d       terminal transactions in (t-37d, t-7d]
//	terminal_fraud_count_1d_lag7d     frauds among the terminal's transactions in
//	                                  (t-8d, t-7d], label TS <= t
//	terminal_fraud_rate_1d_lag7d      that count / terminal_tx_count_1d_lag7d, capped at 1;
//	                                  0 without transactions
//
// The last five were added after the calendar features: new features are
// appended, and models bind their inputs by name, so existing positions and
// names never change.
//
// Country change and geo velocity compare against the card's newest
// transaction; for an out-of-order event they are 0 (and for Peek of an
// applied event other than the card's newest).
//
// Label timing: a Label carries the time the label became known (TS), not the
// transaction's time, and fraud labels are placed in the terminal's windows at
// that label time. Since the lagged windows of an event at t end at t-7d,
// only labels with TS <= t-7d < t can count: features are point-in-time
// correct whatever order labels are applied in (a label from the future of an
// event is never visible to it). The rate divides label-time counts by
// transaction-time counts over the same interval: an estimate, not a ratio of
// the same transactions. A repeated fraud label (same tx_id) counts once; a
// non-fraud label for a tx_id labelled fraud withdraws it.
//
// Constructors that can fail are named New* and return an error
// (NewShared, NewBuilder, NewDecoder: an invalid option wraps
// ErrInvalidOption); none panics on its input. What the options set is
// read back from the Shared they made (Shared.TTL, Shared.MaxCards).
//
// # Concurrency
//
// Decoder and Shared are safe for concurrent use, except Shared.ReadState,
// which must run before the Shared's Builders start (Shared.WriteState locks
// one stripe at a time; pause the workers for a consistent cut). Builder is
// not: use one per worker; Builders of one process share one Shared.
// Shared.Apply and Shared.Peek may run in another goroutine than the
// UpdateLocal and PeekLocal of the Builders of the same Shared (the halves
// share no state but the card labels, which are under their stripe locks);
// rows are reproducible only when each half sees its events and labels in
// one order, Replay's.
// Replay is safe to call concurrently with itself (each call has its own
// state). A card state's CardSlot (Builder.LastCardSlot) is the one thing
// of a Builder another goroutine may touch while the Builder runs: the
// Builder never reads or writes its value, and Load and Store are atomic.
//
// # Metrics
//
// The package exports no metrics: it does no I/O, and its callers (the
// stream workers) count decoded events, dead letters by reason and feature
// latency around it. Builder.Stats and Shared.Stats report the states held
// (gauges) and the evictions (counters); Builder.Cards reports the card states held for a gauge,
// Builder.Late the events not inserted for lateness, for a counter, and
// Builder.LastLate whether the last event was one of them (for its record).
package features
