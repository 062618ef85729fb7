package sqlite_test

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/adapters/sqlite"
	"github.com/402claw/dispatcher/kv"
)

// TestIncrMatchesMemory drives SQLite's single-statement Incr and the memory
// adapter with the same random increments, extreme values and a shared fake
// clock (keys expire and come back): every answer and every Get agree.
func TestIncrMatchesMemory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, err := sqlite.NewWithConfig(openDB(t, filepath.Join(t.TempDir(), "incr.db")), sqlite.Config{Now: clock})
	require.NoError(t, err)
	m := memory.NewKVWithClock(clock)

	r := rand.New(rand.NewPCG(1, 2))
	pick := func(vals ...int64) int64 { return vals[r.IntN(len(vals))] }
	keys := []string{"a", "b", "c"}
	steps := 2500
	if raceEnabled || testing.Short() {
		steps = 400
	}
	for i := range steps {
		key := keys[r.IntN(len(keys))]
		in := kv.Increment{
			Delta: pick(0, 0, 1, 1, 1, 3, -1, -5, math.MaxInt64, math.MinInt64, math.MaxInt64-2),
			Floor: pick(0, 0, 0, 2, 10, -3, math.MinInt64, math.MaxInt64-1),
			Max:   pick(kv.Unbounded, 5, 10, 12, 0, -1, math.MinInt64, math.MinInt64+1, math.MaxInt64-1),
			TTL:   time.Duration(pick(0, 0, int64(time.Second), int64(10*time.Second))),
		}
		if r.IntN(50) == 0 {
			require.NoError(t, s.Delete(ctx, key))
			require.NoError(t, m.Delete(ctx, key))
		}
		gotN, gotOK, err := s.Incr(ctx, key, in)
		require.NoError(t, err)
		wantN, wantOK, err := m.Incr(ctx, key, in)
		require.NoError(t, err)
		require.Equal(t, []any{wantN, wantOK}, []any{gotN, gotOK}, "step %d: %s %+v", i, key, in)
		gv, gerr := s.Get(ctx, key)
		wv, werr := m.Get(ctx, key)
		require.Equal(t, werr, gerr, "step %d: Get %s", i, key)
		require.Equal(t, string(wv), string(gv), "step %d: Get %s", i, key)
		mu.Lock()
		now = now.Add(time.Duration(r.IntN(700)) * time.Millisecond)
		mu.Unlock()
	}
}

// Refusals and reads are answered without a write: a refused increment
// over a full quota, many times, leaves the counter and its expiry alone.
func TestIncrRefusalWritesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "refuse.db"))
	s, err := sqlite.New(db)
	require.NoError(t, err)
	for range 3 {
		_, ok, err := s.Incr(ctx, "q", kv.Increment{Delta: 1, Max: 3, TTL: time.Hour})
		require.NoError(t, err)
		require.True(t, ok)
	}
	var exp int64
	require.NoError(t, db.QueryRow(`SELECT exp FROM kv WHERE key = 'q'`).Scan(&exp))
	for range 20 {
		n, ok, err := s.Incr(ctx, "q", kv.Increment{Delta: 1, Max: 3, TTL: 2 * time.Hour})
		require.NoError(t, err)
		require.False(t, ok)
		require.EqualValues(t, 3, n)
		n, ok, err = s.Incr(ctx, "q", kv.Increment{})
		require.NoError(t, err)
		require.True(t, ok)
		require.EqualValues(t, 3, n)
	}
	var exp2 int64
	require.NoError(t, db.QueryRow(`SELECT exp FROM kv WHERE key = 'q'`).Scan(&exp2))
	require.Equal(t, exp, exp2, "a refused increment does not refresh the TTL")
}
