package sqlite_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/adapters/sqlite"
	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/metrics/metricstest"
)

// Append writes a batch in multi-row INSERTs (64 rows, then the powers of
// two below). Batches of every remainder, with request ids stored by an
// earlier batch and ids repeated within the batch scattered across the
// chunks, leave exactly the rollups and raw events the memory store
// (HourRollup.Add over the first event of each request id) holds after
// the same appends.
func TestAppendChunksMatchMemory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	mem, err := memory.NewEvents(memory.EventsConfig{MaxRecent: 100_000})
	require.NoError(t, err)
	appendBoth := func(events []metrics.UsageEvent) {
		t.Helper()
		require.NoError(t, s.Append(ctx, events...))
		require.NoError(t, mem.Append(ctx, events...))
	}

	tr := metricstest.Traffic{Events: 3000, APIs: 7, Callers: 300, Hours: 5, Start: metricstest.Base}
	r := rand.New(rand.NewPCG(1, 2))
	// A third of the traffic first, in one batch.
	var first []metrics.UsageEvent
	for i := 0; i < tr.Events; i += 3 {
		first = append(first, tr.Event(i))
	}
	appendBoth(first)
	// Then everything, in batches of sizes that leave every remainder mod
	// 64 (1..127, then larger), each with some of its own events repeated
	// under another API later in the batch: the first one must win.
	next, size := 0, 1
	for next < tr.Events {
		n := min(size, tr.Events-next)
		batch := make([]metrics.UsageEvent, 0, n+n/4)
		for i := next; i < next+n; i++ {
			batch = append(batch, tr.Event(i))
		}
		for range n / 4 {
			dup := batch[r.IntN(n)]
			dup.APIID = "intruder"
			batch = append(batch, dup)
		}
		r.Shuffle(len(batch)-n, func(i, j int) { batch[n+i], batch[n+j] = batch[n+j], batch[n+i] })
		appendBoth(batch)
		next += n
		if size < 127 {
			size += 9
		} else {
			size += 100
		}
	}

	asJSON := func(v any) string {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		return string(b)
	}
	got, err := s.Rollups(ctx, metrics.RollupQuery{})
	require.NoError(t, err)
	want, err := mem.Rollups(ctx, metrics.RollupQuery{})
	require.NoError(t, err)
	require.Equal(t, asJSON(want), asJSON(got))
	var calls int64
	for _, r := range got {
		require.NotEqual(t, "intruder", r.APIID)
		calls += r.Events
	}
	require.EqualValues(t, tr.Events, calls)

	gotRecent, err := s.Recent(ctx, 10_000)
	require.NoError(t, err)
	wantRecent, err := mem.Recent(ctx, 10_000)
	require.NoError(t, err)
	require.Len(t, gotRecent, tr.Events)
	require.Equal(t, asJSON(wantRecent), asJSON(gotRecent))
}

// Append runs on the group committer's connection, which is kept (with
// the statements prepared on it) from batch to batch while writes come,
// and given back to the pool once none came for a second.
func TestAppendConnectionIdle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "idle.db"))
	s, err := sqlite.New(db)
	require.NoError(t, err)
	ev := func(id string) metrics.UsageEvent {
		return metricstest.Event(id, "a", "x", metricstest.Base, metrics.LifecycleServed, "0", 5)
	}
	require.Equal(t, 0, db.Stats().InUse)
	require.NoError(t, s.Append(ctx, ev("1")))
	require.Equal(t, 1, db.Stats().InUse, "kept after a batch")
	require.Eventually(t, func() bool { return db.Stats().InUse == 0 }, 10*time.Second, 20*time.Millisecond,
		"given back once no batch came for a second")

	// The next batch takes a connection again.
	require.NoError(t, s.Append(ctx, ev("3"), ev("1")))
	got, err := s.Recent(ctx, 10)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Eventually(t, func() bool { return db.Stats().InUse == 0 }, 10*time.Second, 20*time.Millisecond)
}
