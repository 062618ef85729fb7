package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/sqlite"
	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/metrics/metricstest"
)

func TestMetricsConformance(t *testing.T) {
	t.Parallel()
	metricstest.Run(t, func(t *testing.T) metrics.Store { return newStore(t) })
}

func BenchmarkMetrics(b *testing.B) {
	metricstest.Benchmark(b, func(b *testing.B) metrics.Store { return newStore(b) })
}

// Latency buckets are packed, one varint each: a blob written before
// buckets were appended (shorter) reads with zeros for the new buckets.
func TestRollupLatencyPacking(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	var want metrics.LatencyHistogram
	var events []metrics.UsageEvent
	for i, ms := range []int64{1, 7, 30, 120, 900, 5000, 45_000, 86_400_000} {
		events = append(events, metricstest.Event(fmt.Sprint("l", i), "a", "x", metricstest.Base, metrics.LifecycleServed, "0", ms))
		want.Observe(ms)
	}
	require.NoError(t, s.Append(ctx, events...))
	rs, err := s.Rollups(ctx, metrics.RollupQuery{})
	require.NoError(t, err)
	require.Len(t, rs, 1)
	require.Equal(t, want, rs[0].Latency)

	// Keep the first 20 buckets only (each count fits one byte here).
	_, err = s.DB().Exec(`UPDATE usage_rollups SET latency = substr(latency, 1, 20)`)
	require.NoError(t, err)
	rs, err = s.Rollups(ctx, metrics.RollupQuery{})
	require.NoError(t, err)
	for i := 20; i < metrics.LatencyBuckets; i++ {
		want[i] = 0
	}
	require.Equal(t, want, rs[0].Latency)

	// A corrupt blob is an error, not a wrong answer.
	_, err = s.DB().Exec(`UPDATE usage_rollups SET latency = x'ff'`)
	require.NoError(t, err)
	_, err = s.Rollups(ctx, metrics.RollupQuery{})
	require.Error(t, err)
}

// Several handles (as several processes would) append overlapping batches
// to one file: every request id is counted once, and the rollups agree
// with a memory fold of the distinct events.
func TestMetricsAcrossHandles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "events.db")
	stores := make([]*sqlite.Store, 4)
	for i := range stores {
		s, err := sqlite.New(openDB(t, path))
		require.NoError(t, err)
		stores[i] = s
	}
	tr := metricstest.Traffic{Events: 3000, APIs: 6, Callers: 40, Hours: 10, Start: metricstest.Base}
	if raceEnabled {
		tr.Events = 1000
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(stores))
	for w, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each handle appends every event, in a different batch size.
			if err := tr.Fill(ctx, s, 50+w*37, nil); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	want := map[string]*metrics.HourRollup{}
	for i := range tr.Events {
		e, err := metrics.NormalizeUsageEvent(tr.Event(i))
		require.NoError(t, err)
		k := e.APIID + "@" + metrics.HourOf(e.Time).String()
		r, ok := want[k]
		if !ok {
			nr := metrics.NewHourRollup(e.APIID, e.Time)
			r = &nr
			want[k] = r
		}
		r.Add(e)
	}
	got, err := stores[0].Rollups(ctx, metrics.RollupQuery{})
	require.NoError(t, err)
	require.Len(t, got, len(want))
	for _, r := range got {
		w := want[r.APIID+"@"+r.Hour.String()]
		require.NotNil(t, w)
		w.Owner, w.Directory = r.Owner, r.Directory // last appended differs per interleaving
		require.Equal(t, *w, r)
	}
	recent, err := stores[1].Recent(ctx, 5000)
	require.NoError(t, err)
	require.Len(t, recent, tr.Events)
}

// Raw events are pruned after the retention, by the store's clock; the
// rollups stay, and a pruned request id may be appended again.
func TestMetricsRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	db := openDB(t, filepath.Join(t.TempDir(), "ret.db"))
	s, err := sqlite.NewWithConfig(db, sqlite.Config{Now: clock, EventRetention: time.Hour}) // raised to 48h
	require.NoError(t, err)

	ev := func(id string) metrics.UsageEvent {
		return metricstest.Event(id, "a", "x", metricstest.Base, metrics.LifecycleServed, "0", 5)
	}
	require.NoError(t, s.Append(ctx, ev("old1"), ev("old2")))
	advance(47 * time.Hour)
	require.NoError(t, s.Append(ctx, ev("mid")))
	n, err := s.PruneEvents(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "nothing is older than 48h yet")
	require.NoError(t, s.Append(ctx, ev("old1")), "still remembered")

	advance(2 * time.Hour) // old1/old2 are 49h old, mid 2h
	n, err = s.PruneEvents(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
	got, err := s.Recent(ctx, 10)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, "mid", got[0].RequestID)

	rs, err := s.Rollups(ctx, metrics.RollupQuery{})
	require.NoError(t, err)
	require.Len(t, rs, 1)
	require.EqualValues(t, 3, rs[0].Calls, "rollups are kept")

	// Append prunes by itself, at most once a minute.
	advance(49 * time.Hour)
	require.NoError(t, s.Append(ctx, ev("new")))
	got, err = s.Recent(ctx, 10)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, "new", got[0].RequestID)

	// A negative retention keeps everything.
	keep, err := sqlite.NewWithConfig(db, sqlite.Config{Now: clock, EventRetention: -1})
	require.NoError(t, err)
	advance(1000 * time.Hour)
	n, err = keep.PruneEvents(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
}

// A scan handed to a slow consumer sees one snapshot: appends that commit
// meanwhile are not half-visible (callers and counts always agree).
func TestScanRollupsSnapshot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	tr := metricstest.Traffic{Events: 2000, APIs: 5, Callers: 30, Hours: 24, Start: metricstest.Base}
	require.NoError(t, tr.Fill(ctx, s, 200, nil))
	tr.Offset = 1
	i := 0
	require.NoError(t, s.ScanRollups(ctx, metrics.RollupQuery{}, func(r *metrics.HourRollup) {
		var sum int64
		counts, exact := r.Callers.Counts()
		require.True(t, exact)
		for _, n := range counts {
			sum += n
		}
		require.Equal(t, r.Calls, sum)
		require.Equal(t, r.Calls, r.Latency.Count())
		if i < 20 { // writers append while the scan is open
			require.NoError(t, s.Append(ctx, tr.Event(i), tr.Event(1000+i)))
		}
		i++
	}))
}

func TestRollupBoundsSubSecond(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	h := metricstest.Base
	require.NoError(t, s.Append(ctx, metricstest.Event("a", "a", "x", h, metrics.LifecycleServed, "0", 5)))
	for _, tc := range []struct {
		q    metrics.RollupQuery
		want int
	}{
		{metrics.RollupQuery{From: h.Add(-time.Nanosecond)}, 1},
		{metrics.RollupQuery{From: h.Add(time.Nanosecond)}, 0},
		{metrics.RollupQuery{To: h.Add(time.Nanosecond)}, 1},
		{metrics.RollupQuery{To: h}, 0},
		{metrics.RollupQuery{From: h, To: h.Add(time.Nanosecond)}, 1},
	} {
		rs, err := s.Rollups(ctx, tc.q)
		require.NoError(t, err)
		require.Len(t, rs, tc.want, "%+v", tc.q)
	}
}

func TestRecentUsesIndex(t *testing.T) {
	t.Parallel()
	db := openDB(t, filepath.Join(t.TempDir(), "plan.db"))
	_, err := sqlite.New(db)
	require.NoError(t, err)
	rows, err := db.Query(`EXPLAIN QUERY PLAN SELECT request_id FROM usage_events ORDER BY time_us DESC, seq DESC LIMIT 5`)
	require.NoError(t, err)
	defer rows.Close()
	var plan string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		require.NoError(t, rows.Scan(&id, &parent, &notused, &detail))
		plan += detail + "\n"
	}
	require.Contains(t, plan, "usage_events_time")
	require.NotContains(t, plan, "TEMP B-TREE", "no sort")
}
