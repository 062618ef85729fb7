package kvtest

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/kv"
)

// RunReplicas runs the tests that prove limits exact across replicas: many
// concurrent Incr and IncrAll calls spread over several stores that share
// one backend admit exactly the limit. newReplicas returns n stores over one
// fresh backend, isolated from other tests: n gateway replicas (separate
// clients, pools or handles) in front of one database. A store without
// connections of its own may return the same store n times.
func RunReplicas(t *testing.T, newReplicas func(t *testing.T, n int) []kv.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, stores []kv.Store)
	}{
		{"ExactAcrossReplicas", testExactAcrossReplicas},
		{"IncrAllExactAcrossReplicas", testIncrAllExactAcrossReplicas},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newReplicas(t, 4))
		})
	}
}

// concurrently runs fn(i) for i in [0, n), each in its own goroutine, all
// released at once, and returns how many reported true.
func concurrently(t *testing.T, n int, fn func(i int) (bool, error)) int64 {
	t.Helper()
	var admitted atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ok, err := fn(i)
			if err != nil {
				errs <- err
				return
			}
			if ok {
				admitted.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	return admitted.Load()
}

// testExactAcrossReplicas: limit N, 20·N concurrent attempts, one goroutine
// each, spread over the replicas: exactly N are admitted.
func testExactAcrossReplicas(t *testing.T, stores []kv.Store) {
	const limit = 50
	ctx := context.Background()
	got := concurrently(t, 20*limit, func(i int) (bool, error) {
		_, ok, err := stores[i%len(stores)].Incr(ctx, "q:{acme}:day", kv.Increment{Delta: 1, Max: limit, TTL: time.Hour})
		return ok, err
	})
	require.Equal(t, int64(limit), got)
	v, err := stores[0].Get(ctx, "q:{acme}:day")
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(limit), string(v))
}

// testIncrAllExactAcrossReplicas: batches of a rate, a day and a month
// counter, the day counter the tightest, listed in a different order by each
// goroutine (the store must still lock in one order and never deadlock);
// exactly the day limit of batches pass, every refusal is the day counter's
// at its limit, and every counter moved exactly that many times (never
// partially).
func testIncrAllExactAcrossReplicas(t *testing.T, stores []kv.Store) {
	const limit = 40
	ctx := context.Background()
	keys := []string{"rl:{acme}:caller", "q:{acme}:day", "q:{acme}:month"}
	ins := map[string]kv.Increment{
		keys[0]: {Delta: 1, Max: kv.Unbounded, TTL: time.Hour},
		keys[1]: {Delta: 1, Max: limit, TTL: time.Hour},
		keys[2]: {Delta: 1, Max: 10 * limit, TTL: time.Hour},
	}
	got := concurrently(t, 20*limit, func(i int) (bool, error) {
		ks := slices.Clone(keys)
		if i%2 == 1 {
			slices.Reverse(ks)
		}
		if i%3 == 1 {
			ks[0], ks[1] = ks[1], ks[0]
		}
		batch := make([]kv.Increment, len(ks))
		for j, k := range ks {
			batch[j] = ins[k]
		}
		vals, refused, err := kv.IncrAll(ctx, stores[i%len(stores)], ks, batch)
		if err != nil {
			return false, err
		}
		if refused >= 0 && (ks[refused] != keys[1] || vals[refused] != limit) {
			return false, fmt.Errorf("unexpected refusal of %s with values %v", ks[refused], vals)
		}
		return refused < 0, nil
	})
	require.Equal(t, int64(limit), got)
	for _, k := range keys {
		v, err := stores[1].Get(ctx, k)
		require.NoError(t, err)
		require.Equal(t, strconv.Itoa(limit), string(v), k)
	}
}

// testIncrAllRefusalReportsCurrentValues: a refused batch applies nothing,
// creates no key and reports every key's current value; of two refusals the
// lower index is reported; an empty batch is applied.
func testIncrAllRefusalReportsCurrentValues(t *testing.T, s kv.Store) {
	b, ok := s.(kv.BatchIncrementer)
	if !ok {
		t.Skip("kv.IncrAll's one-by-one fallback reports the values it reached, not the current ones")
	}
	ctx := context.Background()
	_, _, err := s.Incr(ctx, "{t}:b", kv.Increment{Delta: 5, Max: kv.Unbounded})
	require.NoError(t, err)
	for _, keys := range [][]string{{"{t}:a", "{t}:b", "{t}:c"}, {"{t}:c", "{t}:b", "{t}:a"}} {
		vals, refused, err := b.IncrAll(ctx, keys, []kv.Increment{
			{Delta: 1, Max: 10}, {Delta: 1, Max: 5}, {Delta: 1, Max: 10},
		})
		require.NoError(t, err)
		require.Equal(t, 1, refused)
		require.Equal(t, []int64{0, 5, 0}, vals)
		for _, k := range []string{"{t}:a", "{t}:c"} {
			_, err := s.Get(ctx, k)
			require.ErrorIs(t, err, kv.ErrNotFound, "a refused batch creates no key")
		}
	}
	// Two refusals: the lower index is reported.
	_, refused, err := b.IncrAll(ctx, []string{"{t}:z", "{t}:b"}, []kv.Increment{{Delta: 1, Max: 0}, {Delta: 1, Max: 5}})
	require.NoError(t, err)
	require.Equal(t, 0, refused)

	vals, refused, err := b.IncrAll(ctx, nil, nil)
	require.NoError(t, err)
	require.Equal(t, -1, refused)
	require.Empty(t, vals)
}

// testIncrAllDuplicateKey: a key listed twice in one batch sees its earlier
// increment, so the pair cannot overshoot Max together.
func testIncrAllDuplicateKey(t *testing.T, s kv.Store) {
	b, ok := s.(kv.BatchIncrementer)
	if !ok {
		t.Skip("kv.IncrAll's one-by-one fallback reports the values it reached, not the current ones")
	}
	ctx := context.Background()
	keys := []string{"{d}:x", "{d}:x"}
	vals, refused, err := b.IncrAll(ctx, keys, []kv.Increment{{Delta: 2, Max: 3}, {Delta: 2, Max: 3}})
	require.NoError(t, err)
	require.Equal(t, 1, refused)
	require.Equal(t, []int64{0, 0}, vals)
	n, _, err := s.Incr(ctx, "{d}:x", kv.Increment{Max: kv.Unbounded})
	require.NoError(t, err)
	require.Zero(t, n)
	vals, refused, err = b.IncrAll(ctx, keys, []kv.Increment{{Delta: 1, Max: 3}, {Delta: 2, Max: 3}})
	require.NoError(t, err)
	require.Equal(t, -1, refused)
	require.Equal(t, []int64{1, 3}, vals)
}

// testGCRANanoseconds runs GCRA on Unix-nanosecond timestamps, far beyond
// the 2^53 that a double (Lua's numbers, JSON) holds exactly: every TAT must
// come back exact, alone and under concurrency.
func testGCRANanoseconds(t *testing.T, s kv.Store) {
	ctx := context.Background()
	now := time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.UTC).UnixNano() + 1 // odd, not a multiple of 2^k
	T := int64(time.Second/3) + 7                                              // 10 requests per ~3s
	W := 5 * T                                                                 // a burst of 5
	gcra := func(at int64) kv.Increment {
		return kv.Increment{Floor: at, Delta: T, Max: at + W, TTL: time.Minute}
	}
	for i := int64(1); i <= 5; i++ {
		n, ok, err := s.Incr(ctx, "rl:{acme}:c1", gcra(now))
		require.NoError(t, err)
		require.True(t, ok, "burst request %d", i)
		require.Equal(t, now+i*T, n)
	}
	n, ok, err := s.Incr(ctx, "rl:{acme}:c1", gcra(now+T-1))
	require.NoError(t, err)
	require.False(t, ok, "one nanosecond too early")
	require.Equal(t, now+5*T, n, "a refusal returns the TAT, for Retry-After")
	n, ok, err = s.Incr(ctx, "rl:{acme}:c1", gcra(now+T))
	require.NoError(t, err)
	require.True(t, ok, "exactly one emission interval later")
	require.Equal(t, now+6*T, n)
	v, err := s.Get(ctx, "rl:{acme}:c1")
	require.NoError(t, err)
	require.Equal(t, strconv.FormatInt(now+6*T, 10), string(v))
	// The concurrent version: a frozen clock admits exactly W/T.
	const burst = 30
	got := concurrently(t, 20*burst, func(int) (bool, error) {
		_, ok, err := s.Incr(ctx, "rl:{acme}:c2", kv.Increment{Floor: now, Delta: T, Max: now + burst*T})
		return ok, err
	})
	require.Equal(t, int64(burst), got)
}

// testIncrMatchesReference compares the store's arithmetic with kv.Apply on
// edge and random values over the whole int64 range, from absent keys and
// from keys holding a value (0 included).
func testIncrMatchesReference(t *testing.T, s kv.Store) {
	ctx := context.Background()
	edges := []int64{
		0, 1, -1, 2, 999_999_999, 1_000_000_000, 1_000_000_001, -999_999_999, -1_000_000_000,
		-1_000_000_001, 1 << 53, 1<<53 + 1, 1_750_000_000_123_456_789, math.MaxInt64,
		math.MaxInt64 - 1, math.MinInt64, math.MinInt64 + 1, math.MaxInt64 / 2,
	}
	r := rand.New(rand.NewPCG(1, 2))
	pick := func() int64 {
		switch r.IntN(4) {
		case 0:
			return edges[r.IntN(len(edges))]
		case 1:
			return r.Int64N(2000) - 1000
		case 2:
			return r.Int64N(2_000_000_000) - 1_000_000_000
		default:
			return int64(r.Uint64())
		}
	}
	for i := range 3000 {
		cur := pick()
		if cur < 0 {
			cur = -cur // counters are never stored negative
			if cur < 0 {
				cur = 0
			}
		}
		in := kv.Increment{Delta: pick(), Floor: pick(), Max: pick()}
		if i%4 == 0 {
			in.Max = kv.Unbounded
		}
		key := "ref:" + strconv.Itoa(i)
		switch {
		case cur != 0:
			n, ok, err := s.Incr(ctx, key, kv.Increment{Delta: cur, Max: kv.Unbounded})
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, cur, n)
		case i%2 == 0: // a key present with the value 0
			_, _, err := s.Incr(ctx, key, kv.Increment{Delta: 1, Max: kv.Unbounded})
			require.NoError(t, err)
			n, _, err := s.Incr(ctx, key, kv.Increment{Delta: -1, Max: kv.Unbounded})
			require.NoError(t, err)
			require.Zero(t, n)
		}
		wantN, wantOK := kv.Apply(cur, in)
		n, ok, err := s.Incr(ctx, key, in)
		require.NoError(t, err)
		require.Equal(t, wantOK, ok, "cur=%d in=%+v", cur, in)
		require.Equal(t, wantN, n, "cur=%d in=%+v", cur, in)
		stored := cur
		if ok {
			stored = wantN
		}
		got, _, err := s.Incr(ctx, key, kv.Increment{Max: kv.Unbounded})
		require.NoError(t, err)
		require.Equal(t, stored, got, "stored value, cur=%d in=%+v", cur, in)
	}
}
