// Package synth generates synthetic payment transactions with ground-truth
// fraud and delayed labels, for demos, tests, training and evaluation. It is
// deterministic: the same Config and the same sequence of event times give
// the same transactions, byte for byte.
//
// # Concepts
//
// Population. New draws a population from Config.Seed (math/rand/v2 PCG):
// terminals and cards spread over a few cities per country. Terminals have a
// merchant category (MCC) with opening hours and an amount level, a channel
// ("pos", "atm" or "ecom"; web shops carry no geo), a country, a location and
// a popularity. Cards live in one of ten European home countries, in a city;
// each has a log-normal spending profile (median and spread), an activity
// level, a chronotype (day, evening or night-owl person) and a short list of
// preferred terminals near home plus a web shop or two. Amounts are in EUR.
// Local time is Central European Time (UTC+1, no daylight saving).
//
// Genuine traffic. The caller supplies each event time (Generator.Next): a
// demo passes the wall clock, file generation a simulated clock
// (Generator.Simulate). The generator decides who is plausible at that time:
// a chronotype by local hour, a card by activity, then mostly one of its
// usual terminals weighted by the category's opening hours (coffee in the
// morning, restaurants at lunch and dinner, bars at night, transit at rush
// hours; weekends sleep in and shift toward leisure). Some transactions go
// elsewhere in town or to web shops; cards occasionally travel abroad for
// days (only after a quiet spell long enough to fly), and make the odd
// big-ticket purchase. Simulate draws arrivals as a Poisson process with the
// population's Intensity: a night trough near 0.1 and an evening peak near
// 1.6 of the weekly mean, quieter Sundays.
//
// Fraud scenarios. Each fraudulent Tx has Fraud true and a Scenario; all the
// transactions an episode plans are fraud, nothing else is. Episodes start
// when a scenario's share of Config.FraudRate has accrued enough credit for
// one, and plan their transactions ahead; Next emits a planned transaction
// (at the caller's time) once it is due.
//
//   - ScenarioCompromisedTerminal: a popular shop terminal is compromised
//     for 1-4 weeks. Cards used there are skimmed (half of them, up to 5-20
//     cards, paced over the period); each skimmed card is defrauded 1-3 times, 2 minutes to 3 days
//     later (log-uniform), half of them at night: 60% at the compromised terminal itself (so the
//     terminal's label-based fraud rate predicts), the rest at web shops or
//     cloned in another country. Amounts 1.5-5× the usual.
//   - ScenarioAccountTakeover: a card suddenly makes 3-8 large transactions
//     (4-12× its typical amount, at least about 150), minutes apart, at once
//     or (60%) in the coming night; half at terminals in a far country (geo velocity), 30% at web
//     shops selling resaleable goods, 20% at home but not where it shops.
//   - ScenarioCardTesting: a stolen card number is probed with 6-20 tiny
//     amounts (0.50-3.00) at one to three web shops, seconds apart (40% of
//     episodes at night), then cashed out with one large web purchase (200-1500) minutes later.
//   - ScenarioMerchantCollusion: a ring of 4-10 cards runs 2-5 transactions
//     each through one colluding shop over 1-4 days in opening hours (the first
//     at once), at
//     amounts just under round limits (499, 990, 1999...), so the
//     terminal's count and sum spike against its own history.
//
// The signals are there for windowed features (per card and terminal counts,
// sums and means over 1h to 30d, time since last transaction, amount against
// the card's mean, terminal fraud rate from labels, night flag, geo
// velocity) but none is perfect: genuine cards also travel, shop at night,
// buy big and tap small fares, and fraud reuses ordinary terminals.
//
// Labels. Generator.LabelFor gives every fraudulent transaction a label, and
// a Config.GenuineLabelRate sample of genuine ones a fraud:false label. A
// label's TS is when it becomes known: the transaction time plus a
// log-normal delay with mean Config.LabelDelay (σ 0.6); its TxTS is the
// transaction's time (chargeback records carry it). Label draws hash the
// seed and the TxID, so asking for labels never changes the transactions.
//
// The realised fraud rate tracks FraudRate once episodes have played out (a
// few days of event time; episodes planned past the end of a run are lost,
// so short runs read low; in real time the first fraud shows within
// seconds to minutes, but night-time episodes wait for the night). Terminal compromises need traffic at the
// compromised terminal; with very few events per terminal they undershoot.
//
// # Concurrency
//
// A Generator is not safe for concurrent use: Next, Simulate and LabelFor
// share its state; use one Generator per goroutine (with different seeds or
// TxIDPrefixes for distinct streams). Package-level functions are safe.
//
// # Metrics
//
// The package exports no metrics.
package synth
