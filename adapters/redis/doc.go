// Package redis implements the dispatcher's KV port ([kv.Store] and
// [kv.BatchIncrementer]) on Redis, so that several gateway replicas share
// exact rate limits, usage quotas, spend caps and payment idempotency keys.
//
// The adapter takes a client the caller built (a *goredis.Client,
// *goredis.ClusterClient, *goredis.Ring or failover client, all
// goredis.UniversalClient) and never parses URLs itself. It needs Redis 6.0
// or newer (SET ... KEEPTTL).
//
// # One round trip per call
//
// Every method is a single command or a single Lua script, so each call is
// one atomic round trip: [KV.Incr] reads, compares and writes inside one
// script, and [KV.IncrAll] checks every increment before it writes any, in one
// script, which is what makes it all-or-none. Scripts are sent with EVALSHA
// and fall back to EVAL when the server does not have them cached.
//
// Lua in Redis computes with doubles, which are exact only up to 2^53; GCRA
// counters hold timestamps such as Unix nanoseconds (about 2^60). The scripts
// therefore never use Lua numbers for counter values: they split each decimal
// int64 into a high and a low part of nine digits and add and compare those,
// which is exact over the whole int64 range. An increment whose result would
// pass math.MaxInt64 is refused, as the memory adapter refuses it.
//
// # Key layout and Redis Cluster
//
// The Redis key is Config.Prefix followed by the caller's key, unchanged:
//
//	Prefix "dispatcher:" + key "q:{acme}:day:20250101" -> "dispatcher:q:{acme}:day:20250101"
//
// Redis Cluster places a key by its hash tag: the text between the first "{"
// and the next "}" when that is not empty, otherwise the whole key. Callers
// mark in braces the part that groups keys which one request updates together,
// the tenant (or tenant and caller), for example
//
//	rl:{acme}:caller-hash         GCRA state of one caller of tenant acme
//	q:{acme}:day:20250101         daily usage quota of acme
//	q:{acme}:month:202501         monthly usage quota of acme
//	spend:{acme}:day:20250101     daily spend of acme, in micro-USD
//
// so that one IncrAll over a request's counters lands on one slot. A Prefix
// should therefore contain no braces: a Prefix with a hash tag of its own
// would pin every key of the store to a single slot (correct, but one node
// would take all the load).
//
// A multi-key script can run only when all its keys hash to one slot. When the
// client is a *goredis.ClusterClient or *goredis.Ring, IncrAll checks this
// before sending anything and returns an error wrapping [ErrCrossSlot]
// otherwise; on a single Redis server (or a failover pair) any keys may be
// batched.
//
// # Errors and failure
//
// A missing key is [kv.ErrNotFound]. Every other error, a refused
// connection, a timeout, a script error, is returned wrapped with the
// operation and key, and never turned into an admission: callers fail closed.
// Note that go-redis retries a command after some network errors
// (Options.MaxRetries); a retried Incr whose first attempt did reach the
// server counts twice, which errs towards refusing, never towards admitting
// more than the limit. Set MaxRetries to -1 where even that is unwanted.
//
// Expiry uses the Redis server's clock, in milliseconds (PEXPIRE/PX); a TTL
// under one millisecond is rounded up to one millisecond.
package redis
