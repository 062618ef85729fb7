package postgres_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/adapters/postgres"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/kv/kvtest"
	"github.com/402claw/dispatcher/quota/quotatest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	kvtest.Run(t, func(t *testing.T) kv.Store { return newFastStore(t) })
}

func BenchmarkKV(b *testing.B) {
	kvtest.Benchmark(b, func(b *testing.B) kv.Store {
		s, _, _ := newStore(b)
		return s
	})
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

// TestExactAcrossReplicas: limit N, 20·N concurrent attempts spread over four
// pools: exactly N are admitted.
func TestExactAcrossReplicas(t *testing.T) {
	t.Parallel()
	const limit = 50
	stores := replicas(t, 4)
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

// TestIncrAllExactAcrossReplicas: batches over three counters, listed in a
// different order by each goroutine (the store must still lock in one order
// and never deadlock); exactly the tightest limit of batches pass and every
// counter moved that many times.
func TestIncrAllExactAcrossReplicas(t *testing.T) {
	t.Parallel()
	const limit = 40
	stores := replicas(t, 4)
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
		vals, refused, err := stores[i%len(stores)].IncrAll(ctx, ks, batch)
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

func TestIncrAllRefusalReportsCurrentValues(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	ctx := context.Background()
	_, _, err := s.Incr(ctx, "{t}:b", kv.Increment{Delta: 5, Max: kv.Unbounded})
	require.NoError(t, err)
	keys := []string{"{t}:c", "{t}:b", "{t}:a"}
	vals, refused, err := s.IncrAll(ctx, keys, []kv.Increment{
		{Delta: 1, Max: 10}, {Delta: 1, Max: 5}, {Delta: 1, Max: 10},
	})
	require.NoError(t, err)
	require.Equal(t, 1, refused)
	require.Equal(t, []int64{0, 5, 0}, vals)
	for _, k := range []string{"{t}:a", "{t}:c"} {
		_, err := s.Get(ctx, k)
		require.ErrorIs(t, err, kv.ErrNotFound, "a refused batch creates no row")
	}
	// Two refusals: the lower index is reported.
	_, refused, err = s.IncrAll(ctx, []string{"{t}:z", "{t}:b"}, []kv.Increment{{Delta: 1, Max: 0}, {Delta: 1, Max: 5}})
	require.NoError(t, err)
	require.Equal(t, 0, refused)

	vals, refused, err = s.IncrAll(ctx, nil, nil)
	require.NoError(t, err)
	require.Equal(t, -1, refused)
	require.Empty(t, vals)
}

func TestIncrAllDuplicateKey(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	ctx := context.Background()
	keys := []string{"{d}:x", "{d}:x"}
	_, refused, err := s.IncrAll(ctx, keys, []kv.Increment{{Delta: 2, Max: 3}, {Delta: 2, Max: 3}})
	require.NoError(t, err)
	require.Equal(t, 1, refused)
	n, _, err := s.Incr(ctx, "{d}:x", kv.Increment{Max: kv.Unbounded})
	require.NoError(t, err)
	require.Zero(t, n)
	vals, refused, err := s.IncrAll(ctx, keys, []kv.Increment{{Delta: 1, Max: 3}, {Delta: 2, Max: 3}})
	require.NoError(t, err)
	require.Equal(t, -1, refused)
	require.Equal(t, []int64{1, 3}, vals)
}

func TestGCRANanoseconds(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	ctx := context.Background()
	now := time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.UTC).UnixNano() + 1
	T := int64(time.Second/3) + 7
	W := 5 * T
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
	require.Equal(t, now+5*T, n)
	n, ok, err = s.Incr(ctx, "rl:{acme}:c1", gcra(now+T))
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, now+6*T, n)
	// The concurrent version: a frozen clock admits exactly W/T.
	const burst = 30
	got := concurrently(t, 20*burst, func(int) (bool, error) {
		_, ok, err := s.Incr(ctx, "rl:{acme}:c2", kv.Increment{Floor: now, Delta: T, Max: now + burst*T})
		return ok, err
	})
	require.Equal(t, int64(burst), got)
}

// TestIncrMatchesReference compares the SQL arithmetic with the memory
// adapter's Apply over edge and random values of the whole int64 range.
func TestIncrMatchesReference(t *testing.T) {
	t.Parallel()
	s, pool, schema := newStore(t)
	ctx := context.Background()
	tbl := pgx.Identifier{schema, "kv"}.Sanitize()
	edges := []int64{0, 1, -1, 2, 1 << 53, 1<<53 + 1, 1_750_000_000_123_456_789, math.MaxInt64,
		math.MaxInt64 - 1, math.MinInt64, math.MinInt64 + 1, math.MaxInt64 / 2}
	r := rand.New(rand.NewPCG(3, 4))
	pick := func() int64 {
		switch r.IntN(3) {
		case 0:
			return edges[r.IntN(len(edges))]
		case 1:
			return r.Int64N(2000) - 1000
		default:
			return int64(r.Uint64())
		}
	}
	for i := range 1500 {
		cur := max(pick(), 0)
		in := kv.Increment{Delta: pick(), Floor: pick(), Max: pick()}
		if i%4 == 0 {
			in.Max = kv.Unbounded
		}
		key := "ref:" + strconv.Itoa(i)
		if cur != 0 || i%2 == 0 {
			_, err := pool.Exec(ctx, "INSERT INTO "+tbl+" (key, n) VALUES ($1, $2)", key, cur)
			require.NoError(t, err)
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

func TestIncrReadLeavesRowAlone(t *testing.T) {
	t.Parallel()
	s, pool, schema := newStore(t)
	ctx := context.Background()
	tbl := pgx.Identifier{schema, "kv"}.Sanitize()
	n, ok, err := s.Incr(ctx, "absent", kv.Increment{Max: kv.Unbounded, TTL: time.Hour})
	require.NoError(t, err)
	require.True(t, ok)
	require.Zero(t, n)
	var rows int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+tbl).Scan(&rows))
	require.Zero(t, rows, "a read must not create a row")

	_, _, err = s.Incr(ctx, "c", kv.Increment{Delta: 3, Max: kv.Unbounded, TTL: time.Hour})
	require.NoError(t, err)
	_, _, err = s.Incr(ctx, "c", kv.Increment{Max: kv.Unbounded, TTL: time.Second})
	require.NoError(t, err)
	_, _, err = s.Incr(ctx, "c", kv.Increment{Delta: 1, Max: kv.Unbounded})
	require.NoError(t, err)
	var left time.Duration
	require.NoError(t, pool.QueryRow(ctx, "SELECT expires_at - now() FROM "+tbl+" WHERE key = 'c'").Scan(&left))
	require.Greater(t, left, 59*time.Minute, "neither a read nor a TTL-less increment touches the expiry")
}

func TestExpiryAndPurge(t *testing.T) {
	t.Parallel()
	s, pool, schema := newStore(t)
	ctx := context.Background()
	tbl := pgx.Identifier{schema, "kv"}.Sanitize()
	_, _, err := s.Incr(ctx, "c", kv.Increment{Delta: 7, Max: kv.Unbounded, TTL: 50 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, s.Set(ctx, "v", []byte("x"), 50*time.Millisecond))
	require.NoError(t, s.Set(ctx, "keep", []byte("y"), time.Hour))
	require.NoError(t, s.Set(ctx, "forever", []byte("z"), 0))
	time.Sleep(120 * time.Millisecond)

	_, err = s.Get(ctx, "c")
	require.ErrorIs(t, err, kv.ErrNotFound, "expired rows are absent before any purge")
	_, err = s.Get(ctx, "v")
	require.ErrorIs(t, err, kv.ErrNotFound)

	// A write to an expired counter starts from 0, without the old expiry.
	n, ok, err := s.Incr(ctx, "c", kv.Increment{Delta: 1, Max: 1})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(1), n)
	var exp *time.Time
	require.NoError(t, pool.QueryRow(ctx, "SELECT expires_at FROM "+tbl+" WHERE key = 'c'").Scan(&exp))
	require.Nil(t, exp)

	purged, err := s.PurgeExpired(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), purged, "only v was still expired")
	var keys []string
	rows, err := pool.Query(ctx, "SELECT key FROM "+tbl+" ORDER BY key")
	require.NoError(t, err)
	keys, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"c", "forever", "keep"}, keys)

	// A sub-microsecond TTL still expires.
	require.NoError(t, s.Set(ctx, "tiny", []byte("t"), time.Nanosecond))
	require.Eventually(t, func() bool {
		_, err := s.Get(ctx, "tiny")
		return err == kv.ErrNotFound
	}, time.Second, 5*time.Millisecond)
}

func TestEmptyAndNilValues(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	ctx := context.Background()
	require.NoError(t, s.Set(ctx, "nil", nil, 0))
	v, err := s.Get(ctx, "nil")
	require.NoError(t, err)
	require.Equal(t, []byte{}, v, "a nil value is stored as empty, not as a counter")
	ok, err := s.SetNX(ctx, "nx", []byte{}, 0)
	require.NoError(t, err)
	require.True(t, ok)
	v, err = s.Get(ctx, "nx")
	require.NoError(t, err)
	require.Equal(t, []byte{}, v)
}

func TestFailsClosedOnRefusedConnection(t *testing.T) {
	t.Parallel()
	_, _, schema := newStore(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().(*net.TCPAddr)
	require.NoError(t, l.Close())

	cfg, err := pgxpool.ParseConfig(databaseURL(t))
	require.NoError(t, err)
	cfg.ConnConfig.Host = "127.0.0.1"
	cfg.ConnConfig.Port = uint16(addr.Port)
	cfg.ConnConfig.ConnectTimeout = time.Second
	cfg.ConnConfig.Fallbacks = nil
	dead, err := pgxpool.NewWithConfig(context.Background(), cfg) // lazy: does not connect yet
	require.NoError(t, err)
	t.Cleanup(dead.Close)

	_, err = postgres.New(context.Background(), dead, postgres.Config{})
	require.Error(t, err, "New must report an unreachable database")

	// A Store whose database goes away: close the pool under a live Store.
	p2 := newPool(t, 2)
	live, err := postgres.New(context.Background(), p2, postgres.Config{Schema: schema})
	require.NoError(t, err)
	p2.Close()
	ctx := context.Background()
	n, ok, err := live.Incr(ctx, "q", kv.Increment{Delta: 1, Max: 10})
	require.Error(t, err)
	require.False(t, ok, "an error must never admit")
	require.Zero(t, n)
	vals, refused, err := live.IncrAll(ctx, []string{"a", "b"}, []kv.Increment{{Delta: 1, Max: 9}, {Delta: 1, Max: 9}})
	require.Error(t, err)
	require.Nil(t, vals)
	require.Equal(t, -1, refused)
	_, err = live.Get(ctx, "q")
	require.Error(t, err)
	require.NotErrorIs(t, err, kv.ErrNotFound, "a dead database is not a missing key")
	ok, err = live.SetNX(ctx, "lock", []byte("x"), time.Minute)
	require.Error(t, err)
	require.False(t, ok)
}

func BenchmarkQuotaCheck(b *testing.B) {
	quotatest.Benchmark(b, func(b *testing.B) kv.Store {
		s, _, _ := newStore(b)
		return s
	})
}
