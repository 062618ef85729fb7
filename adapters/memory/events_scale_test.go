//go:build !race

package memory_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/metrics/metricstest"
)

// TestEventsScale appends 1,000,000 events (100 APIs, 5,000 callers, two
// weeks, the store's clock following the events) and checks that
// window=week analytics answers in under a second. Skipped with -short; not built with -race,
// whose overhead would make the timing meaningless.
func TestEventsScale(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test")
	}
	ctx := context.Background()
	const weeks2 = 14 * 24
	one := metricstest.Traffic{Events: 1_000_000, APIs: 100, Callers: 5000, Hours: weeks2, Start: metricstest.Base}
	base := heapMB()
	s, took := scaleStore(t, one)
	heap1 := heapMB() - base
	t.Logf("1M events: appended in %v (%.0f ns/event, generation included); heap %.1f MB; dedup ids %d",
		took, float64(took.Nanoseconds())/1e6, heap1, s.DedupLen())

	end := one.Start.Add(weeks2 * time.Hour)
	for _, w := range []metrics.Window{metrics.WindowToday, metrics.WindowWeek, metrics.WindowOverall} {
		// Best of three, so a busy machine does not fail the test.
		var a *metrics.MarketplaceAnalytics
		took := time.Hour
		for range 3 {
			start := time.Now()
			var err error
			a, err = metrics.BuildMarketplaceAnalytics(ctx, s, metrics.AnalyticsOptions{Window: w, Now: end})
			took = min(took, time.Since(start))
			require.NoError(t, err)
		}
		require.NotEmpty(t, a.TopAPIs)
		t.Logf("window=%s: %v (calls=%d agents=%d)", w, took, a.Hero.Calls, a.Hero.ActiveAgents)
		if w == metrics.WindowWeek {
			require.Less(t, took, time.Second)
		}
	}
}

// TestEventsMemoryBounded appends 1M and then 2M events with the same
// (API, hour, caller) space (20 APIs, 100 callers, two weeks): once the
// rollups have seen every triple, more events add no rollup memory; raw
// events are capped and request ids age out after 48 hours.
func TestEventsMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test")
	}
	tr := metricstest.Traffic{Events: 1_000_000, APIs: 20, Callers: 100, Hours: 14 * 24, Start: metricstest.Base}
	base := heapMB()
	s, _ := scaleStore(t, tr)
	heap1 := heapMB() - base
	dedup1 := s.DedupLen()
	s = nil

	tr.Events = 2_000_000
	base = heapMB()
	s2, _ := scaleStore(t, tr)
	heap2 := heapMB() - base
	t.Logf("heap: 1M events %.1f MB (%d dedup ids), 2M events %.1f MB (%d dedup ids)", heap1, dedup1, heap2, s2.DedupLen())
	// The only part that grows is the 48h dedup set (about 100-160 bytes per
	// id), because twice the events arrive per 48h.
	dedupMB := float64(s2.DedupLen()-dedup1) * 160 / (1 << 20)
	require.Less(t, heap2, heap1+dedupMB+10, "memory grows with diversity, not events")
	require.LessOrEqual(t, s2.DedupLen(), tr.Events/7+1000, "request ids pruned after 48h")
}
