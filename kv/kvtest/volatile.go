package kvtest

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/kv"
)

// volatileTests are the cases of Increment.Volatile: whatever tier a store
// keeps volatile counters in, they follow Incr's semantics exactly, and an
// IncrAll that mixes them with durable counters stays all or none.
var volatileTests = []struct {
	name string
	fn   func(t *testing.T, s kv.Store)
}{
	{"VolatileMatchesReference", testVolatileMatchesReference},
	{"VolatileTTLGetDelete", testVolatileTTLGetDelete},
	{"VolatileIncrAllMixedAllOrNone", testVolatileIncrAllMixed},
	{"ConcurrentVolatileExact", testConcurrentVolatile},
	{"ConcurrentVolatileMixedExact", testConcurrentVolatileMixed},
}

// testVolatileMatchesReference compares volatile increments with kv.Apply,
// as testIncrMatchesReference does for durable ones, including reads (Delta
// 0) and undos (a negative Delta) flagged volatile.
func testVolatileMatchesReference(t *testing.T, s kv.Store) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(7, 11))
	for i := range 400 {
		key := "vref:" + strconv.Itoa(i%40)
		cur, _, err := s.Incr(ctx, key, kv.Increment{Max: kv.Unbounded, Volatile: true})
		require.NoError(t, err)
		in := kv.Increment{Delta: r.Int64N(200) - 60, Floor: r.Int64N(300), Max: r.Int64N(2000), TTL: time.Hour, Volatile: true}
		if i%7 == 0 {
			in.Delta = 0
		}
		want, wantOK := kv.Apply(cur, in)
		n, ok, err := s.Incr(ctx, key, in)
		require.NoError(t, err)
		require.Equal(t, wantOK, ok, "increment %d %+v over %d", i, in, cur)
		require.Equal(t, want, n, "increment %d %+v over %d", i, in, cur)
	}
}

func testVolatileTTLGetDelete(t *testing.T, s kv.Store) {
	ctx := context.Background()
	v := kv.Increment{Delta: 5, Max: kv.Unbounded, TTL: 300 * time.Millisecond, Volatile: true}
	_, _, err := s.Incr(ctx, "v:ttl", v)
	require.NoError(t, err)
	_, _, err = s.Incr(ctx, "v:keep", kv.Increment{Delta: 7, Max: kv.Unbounded, TTL: time.Hour, Volatile: true})
	require.NoError(t, err)
	got, err := s.Get(ctx, "v:keep")
	require.NoError(t, err)
	require.Equal(t, "7", string(got), "Get of a volatile counter returns its decimal text")

	_, _, err = s.Incr(ctx, "v:gone", kv.Increment{Delta: 3, Max: kv.Unbounded, Volatile: true})
	require.NoError(t, err)
	require.NoError(t, s.Delete(ctx, "v:gone"))
	_, err = s.Get(ctx, "v:gone")
	require.ErrorIs(t, err, kv.ErrNotFound)
	n, _, err := s.Incr(ctx, "v:gone", kv.Increment{Max: kv.Unbounded, Volatile: true})
	require.NoError(t, err)
	require.Equal(t, int64(0), n, "a deleted volatile counter reads as 0")

	time.Sleep(700 * time.Millisecond)
	n, _, err = s.Incr(ctx, "v:ttl", kv.Increment{Max: kv.Unbounded, Volatile: true})
	require.NoError(t, err)
	require.Equal(t, int64(0), n, "an expired volatile counter reads as 0")
	_, err = s.Get(ctx, "v:ttl")
	require.ErrorIs(t, err, kv.ErrNotFound)
	n, ok, err := s.Incr(ctx, "v:ttl", kv.Increment{Delta: 1, Max: 1, Volatile: true})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(1), n)
	n, _, err = s.Incr(ctx, "v:keep", kv.Increment{Max: kv.Unbounded, Volatile: true})
	require.NoError(t, err)
	require.Equal(t, int64(7), n)
}

// testVolatileIncrAllMixed: volatile GCRA keys and durable counters in one
// IncrAll, as a free request's check does. A refusal on either side applies
// nothing, and a GCRA key is left exactly where it was (its undo is not a
// subtraction: the floor may have moved it).
func testVolatileIncrAllMixed(t *testing.T, s kv.Store) {
	if _, ok := s.(kv.BatchIncrementer); !ok {
		t.Skip("kv.IncrAll's one-by-one fallback is not meant for GCRA counters")
	}
	ctx := context.Background()
	const now, T, W = int64(1_000_000), int64(25), int64(100)
	read := func(k string, volatile bool) int64 {
		t.Helper()
		n, _, err := s.Incr(ctx, k, kv.Increment{Max: kv.Unbounded, Volatile: volatile})
		require.NoError(t, err)
		return n
	}
	gcra := func(at int64) kv.Increment {
		return kv.Increment{Floor: at, Delta: T, Max: at + W, TTL: time.Hour, Volatile: true}
	}
	keys := []string{"{vm}:rate:c", "{vm}:rate:t", "{vm}:use"}
	ins := []kv.Increment{gcra(now), gcra(now), {Delta: 1, Max: 2, TTL: time.Hour}}
	for i := int64(1); i <= 2; i++ {
		vals, refused, err := kv.IncrAll(ctx, s, keys, ins)
		require.NoError(t, err)
		require.Equal(t, -1, refused)
		require.Equal(t, []int64{now + i*T, now + i*T, i}, vals)
	}
	// The durable counter refuses: the volatile TATs stay exactly put, and
	// the values reported are the current ones.
	vals, refused, err := kv.IncrAll(ctx, s, keys, ins)
	require.NoError(t, err)
	require.Equal(t, 2, refused)
	require.Equal(t, []int64{now + 2*T, now + 2*T, 2}, vals)
	require.Equal(t, now+2*T, read("{vm}:rate:c", true))
	require.Equal(t, now+2*T, read("{vm}:rate:t", true))

	// Later, the floor lifts the TATs; the durable counter refuses again:
	// the TATs go back to their old values, not to old+floor-T.
	later := now + 10_000
	_, refused, err = kv.IncrAll(ctx, s, keys, []kv.Increment{gcra(later), gcra(later), {Delta: 1, Max: 2}})
	require.NoError(t, err)
	require.Equal(t, 2, refused)
	require.Equal(t, now+2*T, read("{vm}:rate:c", true))
	require.Equal(t, now+2*T, read("{vm}:rate:t", true))

	// A volatile key refuses: the durable counter is not applied.
	keys2 := []string{"{vm}:use:m", "{vm}:rate:c"}
	for i := 0; i < 2; i++ {
		_, refused, err := kv.IncrAll(ctx, s, keys2, []kv.Increment{{Delta: 1, Max: 100}, gcra(now)})
		require.NoError(t, err)
		require.Equal(t, -1, refused)
	}
	vals, refused, err = kv.IncrAll(ctx, s, keys2, []kv.Increment{{Delta: 1, Max: 100}, gcra(now)})
	require.NoError(t, err)
	require.Equal(t, 1, refused)
	require.Equal(t, []int64{2, now + W}, vals)
	require.Equal(t, int64(2), read("{vm}:use:m", false))

	// A batch of volatile keys only, and one with a key repeated.
	vals, refused, err = kv.IncrAll(ctx, s, []string{"{vm}:a", "{vm}:a", "{vm}:b"}, []kv.Increment{
		{Delta: 2, Max: 10, Volatile: true}, {Delta: 3, Max: 10, Volatile: true}, {Delta: 1, Max: 1, Volatile: true},
	})
	require.NoError(t, err)
	require.Equal(t, -1, refused)
	require.Equal(t, []int64{2, 5, 1}, vals)
	_, refused, err = kv.IncrAll(ctx, s, []string{"{vm}:a", "{vm}:b"}, []kv.Increment{
		{Delta: 2, Max: 10, Volatile: true}, {Delta: 1, Max: 1, Volatile: true},
	})
	require.NoError(t, err)
	require.Equal(t, 1, refused)
	require.Equal(t, int64(5), read("{vm}:a", true))
}

func testConcurrentVolatile(t *testing.T, s kv.Store) {
	ctx := context.Background()
	const now, T, W = int64(5_000_000), int64(1_000), int64(concLimit * 1_000)
	got := Hammer(t, concAttempts, concWorkers, func(int) (bool, error) {
		_, ok, err := s.Incr(ctx, "vgcra", kv.Increment{Floor: now, Delta: T, Max: now + W, TTL: time.Hour, Volatile: true})
		return ok, err
	})
	require.Equal(t, int64(concLimit), got)
	got = Hammer(t, concAttempts, concWorkers, func(int) (bool, error) {
		_, ok, err := s.Incr(ctx, "vhot", kv.Increment{Delta: 1, Max: concLimit, TTL: time.Hour, Volatile: true})
		return ok, err
	})
	require.Equal(t, int64(concLimit), got)
}

// testConcurrentVolatileMixed: volatile GCRA keys and durable counters in
// one batch under contention, first with the durable counter binding, then
// with a volatile one binding. Every admitted batch moved every key once,
// every refused one none.
func testConcurrentVolatileMixed(t *testing.T, s kv.Store) {
	if _, ok := s.(kv.BatchIncrementer); !ok {
		t.Skip("kv.IncrAll's one-by-one fallback is not meant for GCRA counters")
	}
	ctx := context.Background()
	const now, T = int64(5_000_000), int64(1_000)
	const W = int64((concLimit + 10) * 1_000)
	run := func(tag string, rateMax, useMax int64) (int64, []string) {
		keys := []string{"{" + tag + "}:rate:c", "{" + tag + "}:rate:t", "{" + tag + "}:use", "{" + tag + "}:spend"}
		ins := []kv.Increment{
			{Floor: now, Delta: T, Max: now + rateMax, TTL: time.Hour, Volatile: true},
			{Floor: now, Delta: T, Max: now + 2*W, TTL: time.Hour, Volatile: true},
			{Delta: 1, Max: useMax, TTL: time.Hour},
			{Delta: 7, Max: kv.Unbounded, TTL: time.Hour},
		}
		return Hammer(t, concAttempts, concWorkers, func(int) (bool, error) {
			_, refused, err := kv.IncrAll(ctx, s, keys, ins)
			return refused < 0, err
		}), keys
	}
	check := func(keys []string, n int64) {
		t.Helper()
		want := []int64{now + n*T, now + n*T, n, 7 * n}
		for i, k := range keys {
			v, _, err := s.Incr(ctx, k, kv.Increment{Max: kv.Unbounded, Volatile: i < 2})
			require.NoError(t, err)
			require.Equal(t, want[i], v, k)
		}
	}
	got, keys := run("vx", W, concLimit) // the durable usage counter binds
	require.Equal(t, int64(concLimit), got)
	check(keys, concLimit)
	got, keys = run("vy", concLimit*T, concLimit+10) // the volatile GCRA binds
	require.Equal(t, int64(concLimit), got)
	check(keys, concLimit)
}
