package redis_test

import (
	"context"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/adapters/redis"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/kv/kvtest"
	"github.com/402claw/dispatcher/quota/quotatest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	kvtest.Run(t, func(t *testing.T) kv.Store {
		s, _, _ := newStore(t)
		return s
	})
}

func BenchmarkKV(b *testing.B) {
	kvtest.Benchmark(b, func(b *testing.B) kv.Store {
		s, _, _ := newStore(b)
		return s
	})
}

// replicas returns n stores over n separate clients (connection pools) that
// share one prefix: n gateway replicas in front of one Redis.
func replicas(t *testing.T, n int) []*redis.KV {
	t.Helper()
	first := newClient(t)
	prefix := testPrefix(t, first)
	stores := []*redis.KV{redis.New(first, redis.Config{Prefix: prefix})}
	for len(stores) < n {
		stores = append(stores, redis.New(newClient(t), redis.Config{Prefix: prefix}))
	}
	return stores
}

// TestExactAcrossReplicas: limit N, 20·N concurrent attempts, one goroutine
// each, spread over four clients: exactly N are admitted.
func TestExactAcrossReplicas(t *testing.T) {
	t.Parallel()
	const limit, attempts = 50, 20 * 50
	stores := replicas(t, 4)
	ctx := context.Background()
	var admitted atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, attempts)
	start := make(chan struct{})
	for i := range attempts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, ok, err := stores[i%len(stores)].Incr(ctx, "q:{acme}:day", kv.Increment{Delta: 1, Max: limit, TTL: time.Hour})
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
	require.Equal(t, int64(limit), admitted.Load())
	v, err := stores[0].Get(ctx, "q:{acme}:day")
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(limit), string(v))
}

// TestIncrAllExactAcrossReplicas: batches of a rate, a day and a month
// counter, the day counter the tightest; exactly its limit of batches pass
// and every counter moved exactly that many times (never partially).
func TestIncrAllExactAcrossReplicas(t *testing.T) {
	t.Parallel()
	const limit, attempts = 40, 20 * 40
	stores := replicas(t, 4)
	ctx := context.Background()
	keys := []string{"rl:{acme}:caller", "q:{acme}:day", "q:{acme}:month"}
	ins := []kv.Increment{
		{Delta: 1, Max: kv.Unbounded, TTL: time.Hour},
		{Delta: 1, Max: limit, TTL: time.Hour},
		{Delta: 1, Max: 10 * limit, TTL: time.Hour},
	}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, attempts)
	for i := range attempts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vals, refused, err := stores[i%len(stores)].IncrAll(ctx, keys, ins)
			if err != nil {
				errs <- err
				return
			}
			if refused < 0 {
				admitted.Add(1)
			} else if refused != 1 || vals[1] != limit {
				errs <- &unexpected{refused: refused, vals: vals}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, int64(limit), admitted.Load())
	for _, k := range keys {
		v, err := stores[1].Get(ctx, k)
		require.NoError(t, err)
		require.Equal(t, strconv.Itoa(limit), string(v), k)
	}
}

type unexpected struct {
	refused int
	vals    []int64
}

func (u *unexpected) Error() string {
	return "unexpected refusal " + strconv.Itoa(u.refused) + " with values " + strconvInts(u.vals)
}

func strconvInts(v []int64) string {
	s := ""
	for _, n := range v {
		s += strconv.FormatInt(n, 10) + " "
	}
	return s
}

func TestIncrAllRefusalReportsCurrentValues(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	ctx := context.Background()
	_, _, err := s.Incr(ctx, "{t}:b", kv.Increment{Delta: 5, Max: kv.Unbounded})
	require.NoError(t, err)
	keys := []string{"{t}:a", "{t}:b", "{t}:c"}
	vals, refused, err := s.IncrAll(ctx, keys, []kv.Increment{
		{Delta: 1, Max: 10}, {Delta: 1, Max: 5}, {Delta: 1, Max: 10},
	})
	require.NoError(t, err)
	require.Equal(t, 1, refused)
	require.Equal(t, []int64{0, 5, 0}, vals)
	for _, k := range []string{"{t}:a", "{t}:c"} {
		_, err := s.Get(ctx, k)
		require.ErrorIs(t, err, kv.ErrNotFound, "a refused batch creates no key")
	}

	vals, refused, err = s.IncrAll(ctx, nil, nil)
	require.NoError(t, err)
	require.Equal(t, -1, refused)
	require.Empty(t, vals)
}

// A key listed twice in one batch sees its earlier increment, so the pair
// cannot overshoot Max together.
func TestIncrAllDuplicateKey(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	ctx := context.Background()
	keys := []string{"{d}:x", "{d}:x"}
	vals, refused, err := s.IncrAll(ctx, keys, []kv.Increment{{Delta: 2, Max: 3}, {Delta: 2, Max: 3}})
	require.NoError(t, err)
	require.Equal(t, 1, refused)
	require.Equal(t, []int64{0, 0}, vals)
	vals, refused, err = s.IncrAll(ctx, keys, []kv.Increment{{Delta: 1, Max: 3}, {Delta: 2, Max: 3}})
	require.NoError(t, err)
	require.Equal(t, -1, refused)
	require.Equal(t, []int64{1, 3}, vals)
}

// TestGCRANanoseconds runs GCRA on Unix-nanosecond timestamps, far beyond
// the 2^53 that Lua's doubles hold exactly: every TAT must come back exact.
func TestGCRANanoseconds(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
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
}

// TestIncrMatchesReference compares the script's arithmetic with the memory
// adapter's Apply (the reference of kv.Increment) on edge and random values
// over the whole int64 range.
func TestIncrMatchesReference(t *testing.T) {
	t.Parallel()
	s, c, prefix := newStore(t)
	ctx := context.Background()
	edges := []int64{
		0, 1, -1, 2, 999_999_999, 1_000_000_000, 1_000_000_001, -999_999_999, -1_000_000_000,
		-1_000_000_001, 1 << 53, 1<<53 + 1, 1_750_000_000_123_456_789, math.MaxInt64,
		math.MaxInt64 - 1, math.MinInt64, math.MinInt64 + 1, math.MaxInt64 / 2,
	}
	r := rand.New(rand.NewPCG(1, 2))
	pick := func() int64 {
		switch r.IntN(3) {
		case 0:
			return edges[r.IntN(len(edges))]
		case 1:
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
		if cur != 0 || i%2 == 0 {
			require.NoError(t, c.Set(ctx, prefix+key, strconv.FormatInt(cur, 10), 0).Err())
		}
		wantN, wantOK := memory.Apply(cur, in)
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

func TestIncrReadLeavesKeyAlone(t *testing.T) {
	t.Parallel()
	s, c, prefix := newStore(t)
	ctx := context.Background()
	n, ok, err := s.Incr(ctx, "absent", kv.Increment{Max: kv.Unbounded, TTL: time.Hour})
	require.NoError(t, err)
	require.True(t, ok)
	require.Zero(t, n)
	require.Zero(t, c.Exists(ctx, prefix+"absent").Val(), "a read must not create the key")

	_, _, err = s.Incr(ctx, "c", kv.Increment{Delta: 3, Max: kv.Unbounded, TTL: time.Hour})
	require.NoError(t, err)
	_, _, err = s.Incr(ctx, "c", kv.Increment{Max: kv.Unbounded, TTL: time.Second})
	require.NoError(t, err)
	require.Greater(t, c.PTTL(ctx, prefix+"c").Val(), 59*time.Minute, "a read must not touch the expiry")
}

func TestIncrTTLMilliseconds(t *testing.T) {
	t.Parallel()
	s, c, prefix := newStore(t)
	ctx := context.Background()
	// TTL <= 0 keeps the expiry an earlier increment set.
	_, _, err := s.Incr(ctx, "k", kv.Increment{Delta: 1, Max: kv.Unbounded, TTL: time.Hour})
	require.NoError(t, err)
	_, _, err = s.Incr(ctx, "k", kv.Increment{Delta: 1, Max: kv.Unbounded})
	require.NoError(t, err)
	require.Greater(t, c.PTTL(ctx, prefix+"k").Val(), 59*time.Minute)
	// A new key incremented without TTL never expires.
	_, _, err = s.Incr(ctx, "forever", kv.Increment{Delta: 1, Max: kv.Unbounded})
	require.NoError(t, err)
	require.Equal(t, time.Duration(-1), c.PTTL(ctx, prefix+"forever").Val())
	// A sub-millisecond TTL rounds up to 1ms rather than meaning "forever".
	_, _, err = s.Incr(ctx, "tiny", kv.Increment{Delta: 1, Max: kv.Unbounded, TTL: time.Nanosecond})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := s.Get(ctx, "tiny")
		return err == kv.ErrNotFound
	}, time.Second, 5*time.Millisecond)
	// Set and SetNX use milliseconds too.
	require.NoError(t, s.Set(ctx, "v", []byte("x"), 1500*time.Microsecond))
	pttl := c.PTTL(ctx, prefix+"v").Val()
	require.Greater(t, pttl, time.Duration(0))
	require.LessOrEqual(t, pttl, 2*time.Millisecond)
}

func TestIncrOnValueKeyIsAnError(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	ctx := context.Background()
	require.NoError(t, s.Set(ctx, "{x}:v", []byte("not a number"), 0))
	_, _, err := s.Incr(ctx, "{x}:v", kv.Increment{Delta: 1, Max: kv.Unbounded})
	require.ErrorContains(t, err, "not a counter")
	_, _, err = s.IncrAll(ctx, []string{"{x}:c", "{x}:v"}, []kv.Increment{{Delta: 1, Max: 9}, {Delta: 1, Max: 9}})
	require.ErrorContains(t, err, "not a counter")
	_, err = s.Get(ctx, "{x}:c")
	require.ErrorIs(t, err, kv.ErrNotFound, "a failed batch wrote nothing")
}

// TestScriptCacheFlushed: after SCRIPT FLUSH (a restart, a failover) EVALSHA
// fails with NOSCRIPT and the adapter falls back to EVAL.
func TestScriptCacheFlushed(t *testing.T) {
	s, c, _ := newStore(t)
	ctx := context.Background()
	require.NoError(t, c.ScriptFlush(ctx).Err())
	n, ok, err := s.Incr(ctx, "k", kv.Increment{Delta: 2, Max: 5})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(2), n)
	require.NoError(t, c.ScriptFlush(ctx).Err())
	vals, refused, err := s.IncrAll(ctx, []string{"{a}:1", "{a}:2"}, []kv.Increment{{Delta: 1, Max: 5}, {Delta: 1, Max: 5}})
	require.NoError(t, err)
	require.Equal(t, -1, refused)
	require.Equal(t, []int64{1, 1}, vals)
}

// TestClusterRefusesCrossSlotBatch needs no server: the slot check happens
// before anything is sent.
func TestClusterRefusesCrossSlotBatch(t *testing.T) {
	t.Parallel()
	c := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	s := redis.New(c, redis.Config{Prefix: "p:"})
	_, _, err := s.IncrAll(context.Background(), []string{"q:{acme}:day", "q:{other}:day"},
		[]kv.Increment{{Delta: 1, Max: 1}, {Delta: 1, Max: 1}})
	require.ErrorIs(t, err, redis.ErrCrossSlot)
	_, _, err = s.IncrAll(context.Background(), []string{"plain-a", "plain-b"},
		[]kv.Increment{{Delta: 1, Max: 1}, {Delta: 1, Max: 1}})
	require.ErrorIs(t, err, redis.ErrCrossSlot)
	// Same tag: the check passes and the call fails only for want of a server.
	_, _, err = s.IncrAll(context.Background(), []string{"q:{acme}:day", "q:{acme}:month"},
		[]kv.Increment{{Delta: 1, Max: 1}, {Delta: 1, Max: 1}})
	require.Error(t, err)
	require.NotErrorIs(t, err, redis.ErrCrossSlot)
}

// TestScriptParsesStoredText covers stored text the adapter never writes
// itself but Redis may hold: negative and zero-padded numbers, numbers of
// every length, and text that only looks numeric to Lua's tonumber.
func TestScriptParsesStoredText(t *testing.T) {
	t.Parallel()
	s, c, prefix := newStore(t)
	ctx := context.Background()
	refuse := kv.Increment{Delta: 1, Max: math.MinInt64} // always refused: returns cur
	for _, tc := range []struct {
		stored string
		cur    int64
	}{
		{"-1", -1}, {"-0", 0}, {"007", 7}, {"-1000000000", -1_000_000_000},
		{"-999999999999999999", -999_999_999_999_999_999}, {"-9223372036854775808", math.MinInt64},
		{"9223372036854775807", math.MaxInt64}, {"000000000000000000042", 42},
		{"1234567890123456", 1_234_567_890_123_456}, {"-1234567890123456", -1_234_567_890_123_456},
	} {
		require.NoError(t, c.Set(ctx, prefix+"p", tc.stored, 0).Err())
		n, ok, err := s.Incr(ctx, "p", refuse)
		require.NoError(t, err, tc.stored)
		require.False(t, ok)
		require.Equal(t, tc.cur, n, tc.stored)
	}
	for _, bad := range []string{"1e3", "0x10", " 5", "5 ", "1.5", "", "-", "9223372036854775808", "-9223372036854775809", "12345678901234567890"} {
		require.NoError(t, c.Set(ctx, prefix+"p", bad, 0).Err())
		_, _, err := s.Incr(ctx, "p", refuse)
		require.ErrorContains(t, err, "not a counter", "%q", bad)
	}
}

func BenchmarkQuotaCheck(b *testing.B) {
	quotatest.Benchmark(b, func(b *testing.B) kv.Store {
		s, _, _ := newStore(b)
		return s
	})
}
