package redis_test

import (
	"context"
	"math"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

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

// TestReplicas runs the across-replica suite over n separate clients
// (connection pools) that share one prefix: n gateway replicas in front of
// one Redis.
func TestReplicas(t *testing.T) {
	t.Parallel()
	kvtest.RunReplicas(t, func(t *testing.T, n int) []kv.Store {
		first := newClient(t)
		prefix := testPrefix(t, first)
		stores := []kv.Store{redis.New(first, redis.Config{Prefix: prefix})}
		for len(stores) < n {
			stores = append(stores, redis.New(newClient(t), redis.Config{Prefix: prefix}))
		}
		return stores
	})
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
	// Either still there with at most 2ms left, or already gone (-2: a
	// loaded machine took longer than the TTL between the two calls); a
	// TTL rounded to whole seconds would show neither.
	if pttl != -2 {
		require.Greater(t, pttl, time.Duration(0))
		require.LessOrEqual(t, pttl, 2*time.Millisecond)
	}
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
