package redis_test

import (
	"context"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/402claw/dispatcher/kv"
)

// BenchmarkBaseline measures what the adapter costs over the bare round
// trip: a plain INCR, and a trivial script, on the same client.
func BenchmarkBaseline(b *testing.B) {
	s, c, prefix := newStore(b)
	ctx := context.Background()
	b.Run("INCR", func(b *testing.B) {
		for b.Loop() {
			if err := c.Incr(ctx, prefix+"raw").Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	noop := goredis.NewScript(`return redis.call('INCR', KEYS[1])`)
	b.Run("EVALSHA-INCR", func(b *testing.B) {
		for b.Loop() {
			if err := noop.Run(ctx, c, []string{prefix + "raw"}).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Incr-GCRA-ns", func(b *testing.B) {
		now := time.Now().UnixNano()
		for b.Loop() {
			now += int64(time.Microsecond)
			if _, _, err := s.Incr(ctx, "rl:{b}:c", kv.Increment{Floor: now, Delta: int64(time.Millisecond), Max: now + int64(time.Second), TTL: time.Minute}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
