// Package kv declares the small key-value port that rate limits, usage
// quotas, spend caps and payment idempotency are built on.
//
// The port has one atomic primitive, [Store.Incr], general enough for every
// counter the dispatcher keeps:
//
//   - a usage quota is a counter with Floor 0 and Max set to the quota;
//   - a spend cap is the same counter in integer micro-USD;
//   - a GCRA rate limit keeps its theoretical arrival time (TAT) as the
//     counter: Floor is "now", Delta the emission interval and Max
//     "now + window", so max(TAT, now)+T is stored only when it stays within
//     the window, which is exactly GCRA's admission rule.
//
// Because the whole read-compare-write happens inside one Incr call, every
// adapter that makes Incr atomic per key (a mutex, a Lua script, one SQL
// UPSERT) gives exact limits under any concurrency and across replicas.
package kv

import (
	"context"
	"errors"
	"math"
	"time"
)

// ErrNotFound is returned by Get when the key is absent or expired.
var ErrNotFound = errors.New("kv: key not found")

// Unbounded is a Max that never refuses an increment.
const Unbounded int64 = math.MaxInt64

// Increment describes one atomic, conditional update of a counter.
//
// Let cur be the stored value (0 when the key is absent or expired). The
// store computes n = max(cur, Floor) + Delta. When Delta > 0 and n > Max the
// update is refused: nothing is written and Incr returns (cur, false).
// Otherwise n (clamped at 0 from below) is stored and Incr returns (n, true).
// A Delta of 0 reads the counter without changing it.
//
// When the update is applied and TTL > 0, the key expires TTL from now;
// TTL <= 0 leaves any existing expiry in place (a new key then never
// expires).
//
// Volatile says the counter may be lost when the process dies: a
// single-node store may keep it in memory instead of on disk. Short-lived
// counters whose loss only forgets recent history, such as GCRA rate-limit
// windows, set it; quotas, spend caps and idempotency never do. It changes
// nothing about the arithmetic, atomicity or expiry above, and networked
// stores (memory, Redis, PostgreSQL) ignore it. Callers use it consistently
// per key: every increment of a volatile key, its reads (Delta 0) and undos
// included, sets it.
type Increment struct {
	Delta    int64
	Floor    int64
	Max      int64
	TTL      time.Duration
	Volatile bool
}

// Apply is the executable form of Increment's semantics: given the current
// value cur of a counter (0 when absent or expired), it returns the value to
// store and whether the increment is admitted; when refused it returns cur.
// Adapters written in Go can share it, and adapters' tests compare their own
// arithmetic (a Lua script, SQL) with it.
func Apply(cur int64, in Increment) (int64, bool) {
	base := cur
	if in.Floor > base {
		base = in.Floor
	}
	n := base + in.Delta
	if in.Delta > 0 && (n > in.Max || n < base) { // n < base: overflow
		return cur, false
	}
	if n < 0 {
		n = 0
	}
	return n, true
}

// Store is the key-value port. Implementations must be safe for concurrent
// use, and Incr must be atomic per key: that is what makes limits exact.
//
// Counter keys (written by Incr) and value keys (written by Set, SetNX) share
// one key space; callers do not mix the two kinds on one key, except that Get
// of a counter key returns its value as decimal text.
type Store interface {
	// Get returns the value stored at key, or ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
	// Set stores value at key, replacing any previous value. A ttl <= 0
	// means no expiry.
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// SetNX stores value at key only if the key is absent or expired, and
	// reports whether it did.
	SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
	// Delete removes key. Deleting an absent key is not an error.
	Delete(ctx context.Context, key string) error
	// Incr applies in to the counter at key atomically; see Increment.
	Incr(ctx context.Context, key string, in Increment) (int64, bool, error)
}

// BatchIncrementer is an optional ability of a Store: several increments in
// one call (one round trip for a networked store), applied all or none.
//
// IncrAll returns the counters' values after the call and the index of the
// first increment that was refused, or -1 when all were applied. When one is
// refused, none is applied and values holds the current values.
type BatchIncrementer interface {
	IncrAll(ctx context.Context, keys []string, ins []Increment) (values []int64, refused int, err error)
}

// IncrAll applies ins to keys all or none, using the store's
// BatchIncrementer when it has one, and otherwise applying them one by one
// and undoing the applied ones when a later one is refused. The fallback is
// exact for counters whose increments are undone by a negative Delta (quotas,
// spend); it is not meant for GCRA counters, whose undo is not a subtraction.
func IncrAll(ctx context.Context, s Store, keys []string, ins []Increment) ([]int64, int, error) {
	if len(keys) != len(ins) {
		return nil, -1, errors.New("kv: IncrAll: keys and increments differ in length")
	}
	if b, ok := s.(BatchIncrementer); ok {
		return b.IncrAll(ctx, keys, ins)
	}
	values := make([]int64, len(keys))
	for i, key := range keys {
		n, ok, err := s.Incr(ctx, key, ins[i])
		if err != nil || !ok {
			undoErr := undo(ctx, s, keys[:i], ins[:i])
			if err != nil {
				return nil, -1, errors.Join(err, undoErr)
			}
			values[i] = n
			return values, i, undoErr
		}
		values[i] = n
	}
	return values, -1, nil
}

func undo(ctx context.Context, s Store, keys []string, ins []Increment) error {
	var errs []error
	for i := len(keys) - 1; i >= 0; i-- {
		if ins[i].Delta == 0 {
			continue
		}
		if _, _, err := s.Incr(ctx, keys[i], Increment{Delta: -ins[i].Delta, Max: Unbounded}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
