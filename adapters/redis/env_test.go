package redis_test

import (
	"context"
	"os"
	"testing"

	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/redis"
)

// redisURL returns TEST_REDIS_URL. Unset, the test is skipped, except under
// CI=true where a missing service must fail the run rather than hide.
func redisURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("TEST_REDIS_URL")
	if u == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("TEST_REDIS_URL is not set; it is required when CI=true")
		}
		t.Skip("TEST_REDIS_URL is not set; skipping Redis tests")
	}
	return u
}

// newClient returns a client of the test Redis, closed on cleanup. Each
// client has its own connection pool, standing in for one gateway replica.
func newClient(t testing.TB) *goredis.Client {
	t.Helper()
	opts, err := goredis.ParseURL(redisURL(t))
	require.NoError(t, err)
	c := goredis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.Ping(context.Background()).Err(), "Redis at TEST_REDIS_URL does not answer")
	return c
}

// testPrefix returns a prefix unique to this test and deletes its keys on
// cleanup, so parallel and repeated runs never see each other's keys.
func testPrefix(t testing.TB, c *goredis.Client) string {
	t.Helper()
	prefix := "kvtest:" + uuid.NewString() + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			_ = c.Del(ctx, keys...).Err()
		}
	})
	return prefix
}

// newStore returns a KV on a fresh client and prefix.
func newStore(t testing.TB) (*redis.KV, *goredis.Client, string) {
	t.Helper()
	c := newClient(t)
	prefix := testPrefix(t, c)
	return redis.New(c, redis.Config{Prefix: prefix}), c, prefix
}
