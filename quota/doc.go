// Package quota enforces the dispatcher's per-tenant rate limits, usage
// quotas and spend caps (DESIGN section 6) over the kv port, exactly under
// any concurrency and across gateway replicas that share a store.
//
// A [Limiter] is built with [New] over a kv.Store. It implements the
// metering port (package meter): [Limiter.Admit] meters one request (its
// rate limits, one unit of usage quota, an amount held against the spend
// caps) and returns a [Hold], committed with the amount actually charged or
// released. Its pipeline stage ([Limiter.Stage]) meters the requests that
// do not charge; the x402 payment stage meters the ones that do through the
// same port, before any facilitator call.
//
// # Rate limits
//
// Each limit is a GCRA (generic cell rate algorithm) over one counter that
// holds the theoretical arrival time (TAT) in Unix microseconds. For
// "Requests per WindowSeconds" the emission interval is
// T = window/requests (µs, rounded down) and a request at now is one
// kv.Increment{Floor: now, Delta: T, Max: now + requests·T, TTL: window+1s}:
// admitted, it moves the TAT to max(TAT, now)+T; refused, it writes
// nothing, so refused requests never count. Max is requests·T rather than
// the window so that exactly Requests fit in a burst whatever the rounding.
// Microseconds keep every value below 2^53 (until the year 2255), so
// adapters that compute in floating point (Redis Lua) stay exact.
//
// Two limits apply to each request: per caller per tenant (keyed by
// dispatch.Exchange.CallerID, already a hash) and, optionally, per tenant
// over all callers. A tenant's rateLimit.perCaller and rateLimit.global
// ({requests, windowSeconds}) replace its plan's defaults one by one;
// Config.Plans replaces the default table, where a zero Rate turns a limit
// off. The defaults:
//
//	plan        per caller    per tenant (global)
//	free        60/min        600/min
//	pro         300/min       3,000/min
//	business    1,200/min     12,000/min
//	enterprise  6,000/min     60,000/min
//	quarantine  10/min        60/min
//
// Unknown plans get the free rates. A rate asking for more than one
// request per microsecond is capped at that, and windows at 366 days.
//
// When the store has a batch ability (kv.BatchIncrementer) both limits are
// checked in one atomic IncrAll, so a request the tenant-wide limit refuses
// never touches the per-caller counter: exact. Without it, the per-caller
// limit is checked first and, when the tenant-wide one then refuses, the
// per-caller unit is given back by subtracting T. Alone, that restores the
// counter exactly (a TAT in the past is worth the same as "now"). It is not
// exact when another request of the same caller lands in between: during
// the give-back's round trip that request may be refused by the per-caller
// limit it would otherwise have passed (a transient false 429), or, when
// the caller was idle before, the give-back may leave its TAT earlier than
// it would have been by at most the time between the two arrivals (less
// than the round trip, and never more than T). The tenant-wide limit is
// never exceeded, and the per-caller error is bounded by the store's
// latency per race.
//
// Every tenant response carries X-RateLimit-Limit, X-RateLimit-Remaining
// and X-RateLimit-Reset of the binding limit (the refusing one, else the
// one with fewer requests remaining). Reset is the Unix second, rounded up,
// at which the allowance is fully restored (the TAT). A refusal is
// 429 rate_limited with Retry-After: the exact time until both limits
// would admit the request, rounded up to whole seconds. With
// Config.DraftHeaders the responses also carry the IETF draft fields
// (draft-ietf-httpapi-ratelimit-headers), one item per limit:
//
//	RateLimit-Policy: "caller";q=60;w=60, "tenant";q=600;w=60
//	RateLimit: "caller";r=59;t=1, "tenant";r=599;t=1
//
// # Usage quotas
//
// usageLimit.dailyRequests and usageLimit.monthlyRequests count requests
// per calendar UTC day and month. The window id (2026-11-24, 2026-11) is
// part of the counter key, so a new window starts from zero without any
// reset, and a counter expires at its window end plus Config.Slack
// (DefaultSlack, an hour). A request reserves one unit in both counters in
// one all-or-none kv.IncrAll (one round trip on stores with a batch
// ability), before the worker runs. When a later step refuses the request
// before the worker is called, the hold gives the unit back; a request the
// worker answered stays counted, whatever its status. A rate-limited
// request, a 402 challenge or a rejected payment consumes no quota.
//
// Headers: X-Usage-Day-Limit, X-Usage-Day-Remaining, X-Usage-Day-Reset and
// the same for Month, for each limited window; Reset is the Unix second the
// window ends. A refusal is 429 usage_quota_exceeded with X-Usage-Limit,
// X-Usage-Remaining, X-Usage-Reset, X-Usage-Window (day or month) and
// Retry-After (until the window ends, rounded up). When both windows are
// exhausted the month is named, since it resets last.
//
// # Spend caps
//
// spendLimit.dailySpendUsd and spendLimit.monthlySpendUsd bound what a
// tenant settles per UTC day and month. Amounts are exact decimals counted
// as integer micro-USD (caps rounded down to a micro-USD; prices must have
// at most six decimals). A paid request reserves its price in both counters
// atomically before the worker runs; Commit keeps it counted, Release gives
// it back; each is idempotent and excludes the other. Concurrent requests
// can therefore never settle more than a cap. Headers are X-Spend-Day-*,
// X-Spend-Month-* (amounts as decimal USD strings such as "10" or "0.25")
// and, on a 429 spend_cap_exceeded, X-Spend-Limit, X-Spend-Remaining,
// X-Spend-Reset, X-Spend-Window and Retry-After.
//
// # Keys
//
// Every key of a tenant starts with "<prefix>:{<slug>}:" (prefix "q" by
// default), so that the slug is the Redis Cluster hash tag and all the
// keys of one IncrAll live in one slot:
//
//	q:{acme}:rate:c:<callerID>   GCRA TAT of one caller (µs)
//	q:{acme}:rate:ip:<addrID>    GCRA TAT of one client address (µs)
//	q:{acme}:rate:t              GCRA TAT of the whole tenant (µs)
//	q:{acme}:use:d:2026-11-24    requests that day
//	q:{acme}:use:m:2026-11       requests that month
//	q:{acme}:spend:d:2026-11-24  micro-USD reserved that day
//	q:{acme}:spend:m:2026-11     micro-USD reserved that month
//
// The names are short because they are hashed on every request.
//
// # One round trip for a paid request
//
// On a store with a batch ability, one Admit is ONE all-or-none
// kv.IncrAll: the rate limits (per caller, per client address beside an
// asserted identity, per tenant), the day and month usage quota and the day
// and month spend hold, one Lua script on Redis with all its keys in the
// tenant's {slug} slot; the other counters of the tenant are read in the
// same call for the headers. A request refused by one counter consumes none
// of the others: inside one all-or-none IncrAll no GCRA unit needs undoing.
// The payment stage admits a paid request before asking the facilitator
// anything, so a caller over its rate limit is refused before it can cost a
// verify call; a challenge, an undecodable or mismatched payment counts one
// rate unit only. Rate-limit increments are marked kv.Increment.Volatile: a
// single-node store may keep them in memory.
//
// # Failures
//
// A store error fails the request rather than letting it through
// unlimited (the limits are a contract), as 503 store_unavailable with
// nothing counted and nothing charged: the error is a *StoreError wrapping
// dispatch.ErrStoreUnavailable, whose body carries no internals. Give-backs
// run with a context that is not cancelled, since a unit that is not given
// back is lost until its window ends.
//
// # Cost
//
// A request's full check is one store call on a store with a batch ability
// (above), a few otherwise. Keys are built once
// per tenant and UTC day and cached, so the quota package itself allocates
// only the caller's key; on the memory adapter the free check makes 3
// allocations (96 B). See BenchmarkCheck and BenchmarkCheckOverhead (the
// package's own cost, over a store that does nothing).
package quota
