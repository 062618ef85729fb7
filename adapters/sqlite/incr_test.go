package sqlite_test

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
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

// Volatile counters live in memory only: however they are written (Incr,
// IncrAll alone or mixed with durable counters), no row of theirs reaches
// the file, while the durable counters of the same calls are there after a
// reopen and the volatile ones are gone.
func TestVolatileNeverReachesTheFile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "volatile.db")
	db := openDB(t, path)
	s, err := sqlite.New(db)
	require.NoError(t, err)
	now := time.Now().UnixMicro()
	gcra := kv.Increment{Floor: now, Delta: 1000, Max: now + 1_000_000, TTL: time.Hour, Volatile: true}
	for i := range 50 {
		_, ok, err := s.Incr(ctx, "rate:c:solo", gcra)
		require.NoError(t, err)
		require.True(t, ok)
		_, refused, err := s.IncrAll(ctx, []string{"rate:c:mixed", "rate:t", "use:d", "spend:d"}, []kv.Increment{
			gcra, gcra, {Delta: 1, Max: 100, TTL: time.Hour}, {Delta: 5, Max: kv.Unbounded, TTL: time.Hour},
		})
		require.NoError(t, err)
		require.Equal(t, -1, refused, "batch %d", i)
		_, refused, err = s.IncrAll(ctx, []string{"rate:c:only", "rate:t:only"}, []kv.Increment{gcra, gcra})
		require.NoError(t, err)
		require.Equal(t, -1, refused)
	}
	var onDisk int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM kv WHERE key LIKE 'rate:%'`).Scan(&onDisk))
	require.Zero(t, onDisk, "no volatile counter is written to SQLite")
	n, _, err := s.Incr(ctx, "rate:t", kv.Increment{Max: kv.Unbounded}) // a read without the flag
	require.NoError(t, err)
	require.Equal(t, now+50*1000, n, "a key living in the volatile tier is read from it")

	// Reopen, as after a restart: the durable counters are whole, the
	// volatile ones start again from nothing.
	require.NoError(t, db.Close())
	s2, err := sqlite.New(openDB(t, path))
	require.NoError(t, err)
	for key, want := range map[string]int64{"use:d": 50, "spend:d": 250, "rate:c:mixed": 0, "rate:t": 0, "rate:c:solo": 0} {
		n, _, err := s2.Incr(ctx, key, kv.Increment{Max: kv.Unbounded, Volatile: strings.HasPrefix(key, "rate:")})
		require.NoError(t, err)
		require.Equal(t, want, n, key)
	}
}

// A volatile key's undo after a durable refusal gives back everything it
// took even when other callers hammer the same keys: with every durable
// counter refusing, the volatile TATs end at or below "now", so no
// rate-limit capacity was consumed. (An undo racing another call's
// increment subtracts its delta, so the floor's lift of an absent key to
// "now" may remain, which GCRA reads exactly like an absent key.)
func TestVolatileUndoUnderContention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	_, _, err := s.Incr(ctx, "full", kv.Increment{Delta: 1, Max: 1})
	require.NoError(t, err)
	const now = int64(1_000_000)
	gcra := kv.Increment{Floor: now, Delta: 10, Max: now + 1_000_000, TTL: time.Hour, Volatile: true}
	got := run(t, 2000, 32, func(int) (bool, error) {
		_, refused, err := s.IncrAll(ctx, []string{"rate:c", "rate:t", "full"}, []kv.Increment{gcra, gcra, {Delta: 1, Max: 1}})
		return refused < 0, err
	})
	require.Zero(t, got)
	for _, k := range []string{"rate:c", "rate:t"} {
		n, _, err := s.Incr(ctx, k, kv.Increment{Max: kv.Unbounded, Volatile: true})
		require.NoError(t, err)
		require.LessOrEqual(t, n, now, k)
	}
}

// The group committer holds a connection only while it is busy: a second
// after the last write the pool has it back, and writes still work after.
func TestIdleStoreReleasesItsConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "idle.db"))
	s, err := sqlite.New(db)
	require.NoError(t, err)
	_, _, err = s.Incr(ctx, "n", kv.Increment{Delta: 1, Max: kv.Unbounded})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return db.Stats().InUse == 0 }, 10*time.Second, 50*time.Millisecond)
	n, _, err := s.Incr(ctx, "n", kv.Increment{Delta: 1, Max: kv.Unbounded})
	require.NoError(t, err)
	require.Equal(t, int64(2), n)
}
