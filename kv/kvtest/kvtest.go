// Package kvtest is the conformance suite of the kv port. Every adapter runs
// it against a fresh store per subtest:
//
//	func TestConformance(t *testing.T) {
//		kvtest.Run(t, func(t *testing.T) kv.Store { return memory.NewKV() })
//	}
//
// The suite uses real time for expiry with short TTLs, and many goroutines
// with exact counts for atomicity; run it under -race.
package kvtest

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/kv"
)

// NewStore returns a fresh, empty store for one subtest. Stores that share a
// backend must isolate themselves (a key prefix, a schema).
type NewStore func(t *testing.T) kv.Store

// Run runs the whole conformance suite.
func Run(t *testing.T, newStore NewStore) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s kv.Store)
	}{
		{"GetMissing", testGetMissing},
		{"SetGet", testSetGet},
		{"SetTTL", testSetTTL},
		{"SetNX", testSetNX},
		{"Delete", testDelete},
		{"IncrBasics", testIncrBasics},
		{"IncrMax", testIncrMax},
		{"IncrFloorGCRA", testIncrFloor},
		{"IncrTTL", testIncrTTL},
		{"IncrAllAllOrNone", testIncrAll},
		{"IncrAllMixedGCRAAndCounters", testIncrAllMixed},
		{"IncrAllRefusalReportsCurrentValues", testIncrAllRefusalReportsCurrentValues},
		{"IncrAllDuplicateKey", testIncrAllDuplicateKey},
		{"GCRANanoseconds", testGCRANanoseconds},
		{"IncrMatchesReference", testIncrMatchesReference},
		{"ConcurrentIncrExact", testConcurrentIncr},
		{"ConcurrentIncrAllExact", testConcurrentIncrAll},
		{"ConcurrentIncrAllMixedExact", testConcurrentIncrAllMixed},
		{"ConcurrentGCRAExact", testConcurrentGCRA},
		{"ConcurrentSetNXOneWinner", testConcurrentSetNX},
		{"ReleaseComesBack", testRelease},
	}
	tests = append(tests, volatileTests...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

func testGetMissing(t *testing.T, s kv.Store) {
	_, err := s.Get(context.Background(), "missing")
	require.ErrorIs(t, err, kv.ErrNotFound)
}

func testSetGet(t *testing.T, s kv.Store) {
	ctx := context.Background()
	require.NoError(t, s.Set(ctx, "k", []byte("v1"), 0))
	v, err := s.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, []byte("v1"), v)
	require.NoError(t, s.Set(ctx, "k", []byte("v2"), time.Hour))
	v, err = s.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, []byte("v2"), v)
	// Binary values survive.
	bin := []byte{0, 1, 2, 255, '\n'}
	require.NoError(t, s.Set(ctx, "bin", bin, 0))
	v, err = s.Get(ctx, "bin")
	require.NoError(t, err)
	require.Equal(t, bin, v)
}

func testSetTTL(t *testing.T, s kv.Store) {
	ctx := context.Background()
	require.NoError(t, s.Set(ctx, "short", []byte("x"), 300*time.Millisecond))
	require.NoError(t, s.Set(ctx, "long", []byte("y"), time.Hour))
	time.Sleep(700 * time.Millisecond)
	_, err := s.Get(ctx, "short")
	require.ErrorIs(t, err, kv.ErrNotFound)
	v, err := s.Get(ctx, "long")
	require.NoError(t, err)
	require.Equal(t, []byte("y"), v)
}

func testSetNX(t *testing.T, s kv.Store) {
	ctx := context.Background()
	ok, err := s.SetNX(ctx, "nx", []byte("first"), 300*time.Millisecond)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = s.SetNX(ctx, "nx", []byte("second"), time.Hour)
	require.NoError(t, err)
	require.False(t, ok)
	v, err := s.Get(ctx, "nx")
	require.NoError(t, err)
	require.Equal(t, []byte("first"), v)
	time.Sleep(700 * time.Millisecond)
	ok, err = s.SetNX(ctx, "nx", []byte("third"), time.Hour)
	require.NoError(t, err)
	require.True(t, ok, "SetNX must succeed once the key expired")
	v, err = s.Get(ctx, "nx")
	require.NoError(t, err)
	require.Equal(t, []byte("third"), v)
}

func testDelete(t *testing.T, s kv.Store) {
	ctx := context.Background()
	require.NoError(t, s.Delete(ctx, "absent"))
	require.NoError(t, s.Set(ctx, "d", []byte("x"), 0))
	require.NoError(t, s.Delete(ctx, "d"))
	_, err := s.Get(ctx, "d")
	require.ErrorIs(t, err, kv.ErrNotFound)
	_, _, err = s.Incr(ctx, "c", kv.Increment{Delta: 3, Max: kv.Unbounded})
	require.NoError(t, err)
	require.NoError(t, s.Delete(ctx, "c"))
	n, _, err := s.Incr(ctx, "c", kv.Increment{Max: kv.Unbounded})
	require.NoError(t, err)
	require.Equal(t, int64(0), n)
}

func testIncrBasics(t *testing.T, s kv.Store) {
	ctx := context.Background()
	n, ok, err := s.Incr(ctx, "c", kv.Increment{Delta: 1, Max: kv.Unbounded})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(1), n)
	n, ok, err = s.Incr(ctx, "c", kv.Increment{Delta: 41, Max: kv.Unbounded})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(42), n)
	// Delta 0 reads.
	n, ok, err = s.Incr(ctx, "c", kv.Increment{Max: kv.Unbounded})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(42), n)
	// Get of a counter is its decimal text.
	v, err := s.Get(ctx, "c")
	require.NoError(t, err)
	require.Equal(t, "42", string(v))
	// Negative deltas are never refused and clamp at zero.
	n, ok, err = s.Incr(ctx, "c", kv.Increment{Delta: -2, Max: 0})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(40), n)
	n, ok, err = s.Incr(ctx, "c", kv.Increment{Delta: -100, Max: 0})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(0), n)
	// Reading an absent counter gives 0 without error.
	n, ok, err = s.Incr(ctx, "never", kv.Increment{Max: kv.Unbounded})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(0), n)
	// Large values (micro-USD spend) are exact.
	big := int64(9_000_000_000_000_000)
	n, ok, err = s.Incr(ctx, "big", kv.Increment{Delta: big, Max: kv.Unbounded})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, big, n)
}

func testIncrMax(t *testing.T, s kv.Store) {
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		n, ok, err := s.Incr(ctx, "q", kv.Increment{Delta: 1, Max: 3})
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, int64(i), n)
	}
	n, ok, err := s.Incr(ctx, "q", kv.Increment{Delta: 1, Max: 3})
	require.NoError(t, err)
	require.False(t, ok, "the fourth unit must be refused")
	require.Equal(t, int64(3), n, "a refusal returns the current value")
	// A refusal wrote nothing.
	n, _, err = s.Incr(ctx, "q", kv.Increment{Max: kv.Unbounded})
	require.NoError(t, err)
	require.Equal(t, int64(3), n)
	// A delta that does not fit is refused whole even when 1 would fit.
	_, _, err = s.Incr(ctx, "spend", kv.Increment{Delta: 7, Max: 10})
	require.NoError(t, err)
	n, ok, err = s.Incr(ctx, "spend", kv.Increment{Delta: 4, Max: 10})
	require.NoError(t, err)
	require.False(t, ok)
	require.Equal(t, int64(7), n)
	n, ok, err = s.Incr(ctx, "spend", kv.Increment{Delta: 3, Max: 10})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(10), n)
	// Max 0 refuses any positive delta on a fresh key.
	_, ok, err = s.Incr(ctx, "zero", kv.Increment{Delta: 1, Max: 0})
	require.NoError(t, err)
	require.False(t, ok)
}

func testIncrFloor(t *testing.T, s kv.Store) {
	ctx := context.Background()
	// GCRA with window W=100 and emission T=25 admits 4 at the same instant.
	const now, T, W = 1_000, 25, 100
	gcra := kv.Increment{Floor: now, Delta: T, Max: now + W}
	for i := 1; i <= 4; i++ {
		n, ok, err := s.Incr(ctx, "tat", gcra)
		require.NoError(t, err)
		require.True(t, ok, "request %d", i)
		require.Equal(t, int64(now+i*T), n)
	}
	n, ok, err := s.Incr(ctx, "tat", gcra)
	require.NoError(t, err)
	require.False(t, ok)
	require.Equal(t, int64(now+W), n)
	// 25 later one more fits.
	later := kv.Increment{Floor: now + T, Delta: T, Max: now + T + W}
	n, ok, err = s.Incr(ctx, "tat", later)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(now+W+T), n)
	// Long after, the floor lifts the old TAT.
	much := kv.Increment{Floor: now + 10_000, Delta: T, Max: now + 10_000 + W}
	n, ok, err = s.Incr(ctx, "tat", much)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(now+10_000+T), n)
}

func testIncrTTL(t *testing.T, s kv.Store) {
	ctx := context.Background()
	_, _, err := s.Incr(ctx, "ttl", kv.Increment{Delta: 5, Max: kv.Unbounded, TTL: 300 * time.Millisecond})
	require.NoError(t, err)
	_, _, err = s.Incr(ctx, "keep", kv.Increment{Delta: 5, Max: kv.Unbounded, TTL: time.Hour})
	require.NoError(t, err)
	time.Sleep(700 * time.Millisecond)
	n, _, err := s.Incr(ctx, "ttl", kv.Increment{Max: kv.Unbounded})
	require.NoError(t, err)
	require.Equal(t, int64(0), n, "an expired counter reads as 0")
	n, ok, err := s.Incr(ctx, "ttl", kv.Increment{Delta: 1, Max: 1, TTL: time.Hour})
	require.NoError(t, err)
	require.True(t, ok, "an expired counter starts again from 0")
	require.Equal(t, int64(1), n)
	n, _, err = s.Incr(ctx, "keep", kv.Increment{Max: kv.Unbounded})
	require.NoError(t, err)
	require.Equal(t, int64(5), n)
}

func testIncrAll(t *testing.T, s kv.Store) {
	ctx := context.Background()
	keys := []string{"{t}:day", "{t}:month"}
	ins := []kv.Increment{{Delta: 1, Max: 2}, {Delta: 1, Max: 3}}
	for i := 1; i <= 2; i++ {
		vals, refused, err := kv.IncrAll(ctx, s, keys, ins)
		require.NoError(t, err)
		require.Equal(t, -1, refused)
		require.Equal(t, []int64{int64(i), int64(i)}, vals)
	}
	vals, refused, err := kv.IncrAll(ctx, s, keys, ins)
	require.NoError(t, err)
	require.Equal(t, 0, refused)
	require.Equal(t, int64(2), vals[0])
	// Nothing was applied to the month counter.
	n, _, err := s.Incr(ctx, "{t}:month", kv.Increment{Max: kv.Unbounded})
	require.NoError(t, err)
	require.Equal(t, int64(2), n)
	// Refused on the second key: the first is not applied either.
	keys2 := []string{"{u}:a", "{u}:b"}
	_, _, err = s.Incr(ctx, "{u}:b", kv.Increment{Delta: 5, Max: kv.Unbounded})
	require.NoError(t, err)
	_, refused, err = kv.IncrAll(ctx, s, keys2, []kv.Increment{{Delta: 1, Max: 10}, {Delta: 1, Max: 5}})
	require.NoError(t, err)
	require.Equal(t, 1, refused)
	n, _, err = s.Incr(ctx, "{u}:a", kv.Increment{Max: kv.Unbounded})
	require.NoError(t, err)
	require.Equal(t, int64(0), n)
	if b, ok := s.(kv.BatchIncrementer); ok {
		_, _, err := b.IncrAll(ctx, []string{"{v}:a"}, nil)
		require.Error(t, err, "mismatched lengths are an error")
	}
	// A key named twice sees its earlier step: together they must fit.
	_, refused, err = kv.IncrAll(ctx, s, []string{"{w}:k", "{w}:k"}, []kv.Increment{{Delta: 3, Max: 5}, {Delta: 3, Max: 5}})
	require.NoError(t, err)
	require.Equal(t, 1, refused)
	n, _, err = s.Incr(ctx, "{w}:k", kv.Increment{Max: kv.Unbounded})
	require.NoError(t, err)
	require.Equal(t, int64(0), n, "nothing applied")
	vals, refused, err = kv.IncrAll(ctx, s, []string{"{w}:k", "{w}:k"}, []kv.Increment{{Delta: 2, Max: 5}, {Delta: 3, Max: 5}})
	require.NoError(t, err)
	require.Equal(t, -1, refused)
	require.Equal(t, []int64{2, 5}, vals)
}

// testIncrAllMixed mixes GCRA increments (Floor "now") with plain counters
// in one IncrAll, as a paid request's combined check does (two rate limits,
// usage and spend windows): each increment follows its own Floor and Max,
// and a refusal on either kind applies none of the others.
func testIncrAllMixed(t *testing.T, s kv.Store) {
	if _, ok := s.(kv.BatchIncrementer); !ok {
		t.Skip("kv.IncrAll's one-by-one fallback is not meant for GCRA counters")
	}
	ctx := context.Background()
	const now, T, W = int64(1_000_000), int64(25), int64(100) // GCRA: 4 at once
	gcra := kv.Increment{Floor: now, Delta: T, Max: now + W, TTL: time.Hour}
	keys := []string{"{m}:tat", "{m}:day", "{m}:spend"}
	ins := []kv.Increment{gcra, {Delta: 1, Max: 2, TTL: time.Hour}, {Delta: 10_000, Max: 1_000_000, TTL: time.Hour}}
	for i := int64(1); i <= 2; i++ {
		vals, refused, err := kv.IncrAll(ctx, s, keys, ins)
		require.NoError(t, err)
		require.Equal(t, -1, refused)
		require.Equal(t, []int64{now + i*T, i, i * 10_000}, vals, "the floor applies to the GCRA key only")
	}
	read := func(k string) int64 {
		t.Helper()
		n, _, err := s.Incr(ctx, k, kv.Increment{Max: kv.Unbounded})
		require.NoError(t, err)
		return n
	}
	// The counter refuses: the GCRA key is not moved, the spend not added.
	vals, refused, err := kv.IncrAll(ctx, s, keys, ins)
	require.NoError(t, err)
	require.Equal(t, 1, refused)
	require.Equal(t, int64(2), vals[1])
	require.Equal(t, now+2*T, read("{m}:tat"), "a refused batch leaves the GCRA TAT alone")
	require.Equal(t, int64(20_000), read("{m}:spend"))

	// The GCRA key refuses after two more: the counters are not touched.
	keys2 := []string{"{m}:tat", "{m}:month", "{m}:spend"}
	ins2 := []kv.Increment{gcra, {Delta: 1, Max: 100, TTL: time.Hour}, {Delta: 10_000, Max: 1_000_000, TTL: time.Hour}}
	for i := 0; i < 2; i++ {
		_, refused, err := kv.IncrAll(ctx, s, keys2, ins2)
		require.NoError(t, err)
		require.Equal(t, -1, refused)
	}
	vals, refused, err = kv.IncrAll(ctx, s, keys2, ins2)
	require.NoError(t, err)
	require.Equal(t, 0, refused)
	require.Equal(t, now+W, vals[0])
	require.Equal(t, int64(2), read("{m}:month"))
	require.Equal(t, int64(40_000), read("{m}:spend"))

	// A counter first and the GCRA key last: the refusal is reported at
	// the GCRA's index and the counter before it is not applied.
	_, refused, err = kv.IncrAll(ctx, s, []string{"{m}:month", "{m}:tat"}, []kv.Increment{{Delta: 1, Max: 100}, gcra})
	require.NoError(t, err)
	require.Equal(t, 1, refused)
	require.Equal(t, int64(2), read("{m}:month"))
	// Later the floor lifts the old TAT, in the same batch as a counter.
	later := kv.Increment{Floor: now + 10_000, Delta: T, Max: now + 10_000 + W, TTL: time.Hour}
	vals, refused, err = kv.IncrAll(ctx, s, []string{"{m}:month", "{m}:tat"}, []kv.Increment{{Delta: 1, Max: 100}, later})
	require.NoError(t, err)
	require.Equal(t, -1, refused)
	require.Equal(t, []int64{3, now + 10_000 + T}, vals)
}

const (
	concLimit    = 50
	concAttempts = 20 * concLimit
	concWorkers  = 64
)

// Hammer runs attempts calls of fn over workers goroutines and returns how
// many reported success; an error from fn fails t. Suites that prove exact
// counts under concurrency (this one, quotatest, adapters' own) share it.
func Hammer(t testing.TB, attempts, workers int, fn func(i int) (bool, error)) int64 {
	t.Helper()
	var ok atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= attempts {
					return
				}
				allowed, err := fn(i)
				if err != nil {
					errs <- err
					return
				}
				if allowed {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	return ok.Load()
}

func testConcurrentIncr(t *testing.T, s kv.Store) {
	ctx := context.Background()
	got := Hammer(t, concAttempts, concWorkers, func(int) (bool, error) {
		_, ok, err := s.Incr(ctx, "hot", kv.Increment{Delta: 1, Max: concLimit, TTL: time.Hour})
		return ok, err
	})
	require.Equal(t, int64(concLimit), got)
	n, _, err := s.Incr(ctx, "hot", kv.Increment{Max: kv.Unbounded})
	require.NoError(t, err)
	require.Equal(t, int64(concLimit), n)
}

func testConcurrentIncrAll(t *testing.T, s kv.Store) {
	ctx := context.Background()
	keys := []string{"{c}:day", "{c}:month"}
	ins := []kv.Increment{{Delta: 1, Max: concLimit, TTL: time.Hour}, {Delta: 1, Max: concLimit + 10, TTL: time.Hour}}
	got := Hammer(t, concAttempts, concWorkers, func(int) (bool, error) {
		_, refused, err := kv.IncrAll(ctx, s, keys, ins)
		return refused < 0, err
	})
	require.Equal(t, int64(concLimit), got)
	for _, k := range keys {
		n, _, err := s.Incr(ctx, k, kv.Increment{Max: kv.Unbounded})
		require.NoError(t, err)
		require.Equal(t, int64(concLimit), n, k)
	}
}

// testConcurrentIncrAllMixed: GCRA keys (per caller and tenant-wide, a
// frozen clock) and plain counters in one batch under contention. The usage
// counter binds: exactly concLimit batches are applied, and the GCRA TATs
// moved exactly concLimit times.
func testConcurrentIncrAllMixed(t *testing.T, s kv.Store) {
	if _, ok := s.(kv.BatchIncrementer); !ok {
		t.Skip("kv.IncrAll's one-by-one fallback is not meant for GCRA counters")
	}
	ctx := context.Background()
	const now, T = int64(5_000_000), int64(1_000)
	const W = int64((concLimit + 10) * 1_000)
	keys := []string{"{x}:rate:c", "{x}:rate:t", "{x}:use", "{x}:spend"}
	ins := []kv.Increment{
		{Floor: now, Delta: T, Max: now + W, TTL: time.Hour},
		{Floor: now, Delta: T, Max: now + 2*W, TTL: time.Hour},
		{Delta: 1, Max: concLimit, TTL: time.Hour},
		{Delta: 7, Max: 7 * (concLimit + 5), TTL: time.Hour},
	}
	got := Hammer(t, concAttempts, concWorkers, func(int) (bool, error) {
		_, refused, err := kv.IncrAll(ctx, s, keys, ins)
		return refused < 0, err
	})
	require.Equal(t, int64(concLimit), got)
	want := []int64{now + concLimit*T, now + concLimit*T, concLimit, 7 * concLimit}
	for i, k := range keys {
		n, _, err := s.Incr(ctx, k, kv.Increment{Max: kv.Unbounded})
		require.NoError(t, err)
		require.Equal(t, want[i], n, k)
	}
}

func testConcurrentGCRA(t *testing.T, s kv.Store) {
	ctx := context.Background()
	// A frozen clock: exactly W/T requests fit.
	const now, T, W = int64(5_000_000), int64(1_000), int64(concLimit * 1_000)
	got := Hammer(t, concAttempts, concWorkers, func(int) (bool, error) {
		_, ok, err := s.Incr(ctx, "gcra", kv.Increment{Floor: now, Delta: T, Max: now + W, TTL: time.Hour})
		return ok, err
	})
	require.Equal(t, int64(concLimit), got)
}

func testConcurrentSetNX(t *testing.T, s kv.Store) {
	ctx := context.Background()
	got := Hammer(t, 500, concWorkers, func(i int) (bool, error) {
		return s.SetNX(ctx, "lock", []byte(strconv.Itoa(i)), time.Hour)
	})
	require.Equal(t, int64(1), got)
}

func testRelease(t *testing.T, s kv.Store) {
	ctx := context.Background()
	in := kv.Increment{Delta: 1, Max: 2, TTL: time.Hour}
	for i := 0; i < 2; i++ {
		_, ok, err := s.Incr(ctx, "r", in)
		require.NoError(t, err)
		require.True(t, ok)
	}
	_, ok, err := s.Incr(ctx, "r", in)
	require.NoError(t, err)
	require.False(t, ok)
	_, _, err = s.Incr(ctx, "r", kv.Increment{Delta: -1, Max: kv.Unbounded})
	require.NoError(t, err)
	_, ok, err = s.Incr(ctx, "r", in)
	require.NoError(t, err)
	require.True(t, ok, "a released unit must come back")
}

// Benchmark measures Incr and IncrAll on a store, serially and in parallel.
func Benchmark(b *testing.B, newStore func(b *testing.B) kv.Store) {
	b.Run("Incr", func(b *testing.B) {
		s := newStore(b)
		ctx := context.Background()
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, _, err := s.Incr(ctx, "bench", kv.Increment{Delta: 1, Max: kv.Unbounded, TTL: time.Hour}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("IncrParallel", func(b *testing.B) {
		s := newStore(b)
		ctx := context.Background()
		var id atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			key := fmt.Sprintf("bench:%d", id.Add(1))
			for pb.Next() {
				if _, _, err := s.Incr(ctx, key, kv.Increment{Delta: 1, Max: kv.Unbounded, TTL: time.Hour}); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("IncrAll3", func(b *testing.B) {
		s := newStore(b)
		ctx := context.Background()
		keys := []string{"{b}:rate", "{b}:day", "{b}:month"}
		ins := []kv.Increment{{Delta: 1, Max: kv.Unbounded}, {Delta: 1, Max: kv.Unbounded}, {Delta: 1, Max: kv.Unbounded}}
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, _, err := kv.IncrAll(ctx, s, keys, ins); err != nil {
				b.Fatal(err)
			}
		}
	})
}
