package memory_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/kv"
)

// manualClock is an injected clock moved by hand.
type manualClock struct{ ns atomic.Int64 }

func newManualClock() *manualClock {
	c := &manualClock{}
	c.ns.Store(time.Date(2026, 1, 5, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *manualClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *manualClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
func counterIncr(ttl time.Duration) kv.Increment {
	return kv.Increment{Delta: 1, Max: kv.Unbounded, TTL: ttl}
}

// TestKVReclaimsExpiredKeys is the security finding: 300,000 one-shot
// callers left 300,000 dead keys behind, because only a key touched again
// was dropped. Now every write sweeps a few entries of its shard, so after
// expiry the store holds what is live, whichever write path the traffic
// takes.
func TestKVReclaimsExpiredKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	writes := map[string]func(s *memory.KV, key string, ttl time.Duration) error{
		"IncrAll": func(s *memory.KV, key string, ttl time.Duration) error {
			_, refused, err := s.IncrAll(ctx, []string{key + ":d", key + ":m"}, []kv.Increment{counterIncr(ttl), counterIncr(ttl)})
			if refused >= 0 {
				panic("refused")
			}
			return err
		},
		"Incr": func(s *memory.KV, key string, ttl time.Duration) error {
			_, _, err := s.Incr(ctx, key, counterIncr(ttl))
			return err
		},
		"Set": func(s *memory.KV, key string, ttl time.Duration) error {
			return s.Set(ctx, key, []byte("v"), ttl)
		},
		"SetNX": func(s *memory.KV, key string, ttl time.Duration) error {
			_, err := s.SetNX(ctx, key, []byte("v"), ttl)
			return err
		},
	}
	for name, write := range writes {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const oneShot, later = 300_000, 150_000
			clk := newManualClock()
			s := memory.NewKVWithClock(clk.Now)
			for i := range oneShot {
				require.NoError(t, write(s, "old-caller-"+strconv.Itoa(i), time.Hour))
			}
			held := s.Stored()
			require.GreaterOrEqual(t, held, oneShot)

			clk.Advance(2 * time.Hour)
			require.Equal(t, 0, s.Len(), "every one-shot key expired")
			require.Equal(t, held, s.Stored(), "nothing is reclaimed without writes")

			// Fresh traffic (on every shard, as real traffic is): each write
			// sweeps its shard a little.
			for i := range later {
				require.NoError(t, write(s, "new-caller-"+strconv.Itoa(i), time.Hour))
			}
			live := s.Len()
			require.GreaterOrEqual(t, live, later)
			require.Equal(t, live, s.Stored(), "the expired keys were reclaimed")
		})
	}
}

// TestKVSweepKeepsLiveKeys checks that sweeping removes only expired keys:
// counters with and without expiry, and values, keep their contents while
// expired neighbours are reclaimed around them.
func TestKVSweepKeepsLiveKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newManualClock()
	s := memory.NewKVWithClock(clk.Now)
	const n = 20_000
	for i := range n {
		key := strconv.Itoa(i)
		switch i % 4 {
		case 0: // expires soon
			_, _, err := s.Incr(ctx, "short:"+key, counterIncr(time.Minute))
			require.NoError(t, err)
		case 1: // never expires
			_, _, err := s.Incr(ctx, "forever:"+key, kv.Increment{Delta: int64(i), Max: kv.Unbounded})
			require.NoError(t, err)
		case 2:
			require.NoError(t, s.Set(ctx, "value:"+key, []byte(key), 24*time.Hour))
		case 3:
			_, _, err := s.Incr(ctx, "day:"+key, kv.Increment{Delta: int64(i), Max: kv.Unbounded, TTL: 24 * time.Hour})
			require.NoError(t, err)
		}
	}
	clk.Advance(time.Hour)
	for i := range 4 * n {
		require.NoError(t, s.Set(ctx, "churn:"+strconv.Itoa(i%5000), []byte("x"), time.Second))
	}
	require.Equal(t, s.Len(), s.Stored())
	require.Equal(t, 3*n/4+5000, s.Len())
	for i := range n {
		key := strconv.Itoa(i)
		switch i % 4 {
		case 0:
			_, err := s.Get(ctx, "short:"+key)
			require.ErrorIs(t, err, kv.ErrNotFound)
		case 1:
			v, err := s.Get(ctx, "forever:"+key)
			require.NoError(t, err)
			require.Equal(t, key, string(v))
		case 2:
			v, err := s.Get(ctx, "value:"+key)
			require.NoError(t, err)
			require.Equal(t, key, string(v))
		case 3:
			v, err := s.Get(ctx, "day:"+key)
			require.NoError(t, err)
			require.Equal(t, key, string(v))
		}
	}
}

// TestKVSweepUnderConcurrency hammers expiring counters from many
// goroutines while the clock moves, so the sweep runs concurrently with
// every write path: the counts of live keys stay exact (run with -race).
func TestKVSweepUnderConcurrency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newManualClock()
	s := memory.NewKVWithClock(clk.Now)
	const workers, perWorker = 16, 4000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				// One-shot keys that expire at once, and one shared counter
				// that never does.
				key := "w" + strconv.Itoa(w) + ":" + strconv.Itoa(i)
				_, _, err := s.IncrAll(ctx, []string{key, "shared"}, []kv.Increment{counterIncr(time.Nanosecond), {Delta: 1, Max: kv.Unbounded}})
				if err != nil {
					t.Error(err)
					return
				}
				if i%100 == 0 {
					clk.Advance(time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	v, err := s.Get(ctx, "shared")
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(workers*perWorker), string(v))
	clk.Advance(time.Second)
	for i := range 50_000 {
		require.NoError(t, s.Delete(ctx, "absent-"+strconv.Itoa(i)))
	}
	require.Equal(t, 1, s.Len())
	require.Equal(t, 1, s.Stored())
}
