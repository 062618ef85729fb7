// Package metrics records usage events and turns them into marketplace
// analytics: leaderboards by window and a trending score that resists
// gaming.
//
// # Events
//
// The dispatcher emits one UsageEvent per request, for its final outcome
// (its Lifecycle), through a Sink. AsyncSink queues events in a bounded
// buffer and appends them in batches from a background goroutine, so the
// request path never blocks on storage: when the buffer is full the event is
// dropped and counted (AsyncSink.Dropped). Caller ids are hashed with
// HashCaller before they reach an event; raw keys are never stored.
//
// A request counts as a call (Countable) when it reached the tenant's
// worker: served, payment_settled, payment_settlement_failed and
// worker_error. 402 challenges, invalid payments, replays and refusals by
// rate limits, quotas or spend caps are recorded but are not calls. Only
// payment_settled is Billable. A call is an error when its lifecycle is
// worker_error or payment_settlement_failed or its status is 5xx.
//
// # Store and rollups
//
// A Store de-duplicates events by request id and keeps, next to the raw
// events, one HourRollup per API per UTC hour: calls, errors, revenue in
// integer micro-USD, a fixed-bucket LatencyHistogram that merges by
// addition, and two CallerSets: calls per caller id and calls per source.
// A CallerSet is exact up to ExactCallers (1024) ids and then turns into a
// HyperLogLog sketch (precision 14, about 0.8% standard error) plus a
// Space-Saving summary of its HeavyHitters busiest ids, so a rollup stays
// bounded (about 20 KB per set) however many callers, real or minted, an
// hour sees, and the union over a window's hours still estimates its
// distinct callers within a few percent. Only calls (countable events)
// reach the sets. Analytics reads only rollups, so its cost grows with
// APIs x hours, not with events or callers. SQL adapters update rollup rows
// in the same transaction as the event insert; see Store. The conformance
// suite is metricstest.Run.
//
// # Who is a caller
//
// CallerID is what a caller says it is (X-Agent-Id and the other identity
// sources of the dispatcher, or the payer of a paid call): free to rotate.
// Caller diversity in the trending score is therefore measured on sources
// (UsageEvent.Source), which a caller cannot mint for free: the verified
// payer (Payer, see HashPayer) of a settled call, otherwise the client's
// network prefix (ClientNet, see HashClientNet: /24 for IPv4, /48 for
// IPv6), so 1,000 rotating X-Agent-Ids from one /24 are one source. Events
// that carry neither (recorded before these fields existed) count their
// CallerID. The public figures say which they count: uniqueCallers and
// activeAgents count caller ids (the audience as callers describe
// themselves); uniqueSources and maxSourceShare are the score's inputs.
//
// # Windows
//
// Windows are UTC: today starts at 00:00 today, week at 00:00 six days ago
// (seven calendar days including today), overall covers all time. The clock
// is injected (AnalyticsOptions.Now, PlatformConfig.Now).
//
// # Trending score
//
// For an API with n calls (n > 0) in the window, e errors, u distinct
// sources, revenue r in US cents, p95 latency p in milliseconds, busiest
// source share c = (calls of the busiest source)/n and busiest hour share
// h = (calls in the busiest hour)/n:
//
//	activity  = ln(1+n) + ln(1+u) + ln(1+r)
//	quality   = (1 - e/n)^2 / (1 + p/1000)
//	diversity = min(1, u/sqrt(n))
//	fairness  = (0.5 + 0.5*diversity) * (1 - 0.5*c) * (1 - 0.5*h)
//	score     = activity * quality * fairness, rounded to 4 decimals
//
// Logarithms make the rewards grow with volume but let no single term run
// away; every penalty is a factor in (0, 1]. The error factor is squared so
// that a 50% error rate quarters the score; a p95 of 1 s halves it and 3 s
// quarters it. diversity compares callers with the square root of calls, so
// a popular API with many returning callers is not penalised but one
// caller's hundred calls are. Each gaming signal can at most halve the
// score, and together they can cut it to an eighth: 90 calls from one
// source in one hour score about 0.72 (whatever ids they assert), while 70
// calls from 35 sources over 12 hours score about 7.4. An API without calls
// scores 0.
//
// The leaderboard (topApis) lists APIs with at least one call, ordered by
// score, then calls, distinct sources and revenue (descending), then apiId
// (ascending), so equal scores always rank the same way.
//
// # Platform routes
//
// PlatformHandler serves GET /__platform/health, the admin-only
// GET /__platform/events and the public GET /__platform/analytics.
package metrics
