package postgres_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/postgres"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/kv/kvtest"
	"github.com/402claw/dispatcher/quota/quotatest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	kvtest.Run(t, func(t *testing.T) kv.Store { return newFastStore(t) })
}

// TestReplicas runs the across-replica suite over n pools sharing one schema.
func TestReplicas(t *testing.T) {
	t.Parallel()
	kvtest.RunReplicas(t, func(t *testing.T, n int) []kv.Store {
		var stores []kv.Store
		for _, s := range replicas(t, n) {
			stores = append(stores, s)
		}
		return stores
	})
}

func BenchmarkKV(b *testing.B) {
	kvtest.Benchmark(b, func(b *testing.B) kv.Store {
		s, _, _ := newStore(b)
		return s
	})
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
