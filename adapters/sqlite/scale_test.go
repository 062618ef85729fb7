//go:build !race

package sqlite_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/metrics/metricstest"
)

// TestMetricsScale appends 1,000,000 events (100 APIs, 5,000 callers, two
// weeks; batches of 20,000 per Append, one transaction each) and checks
// that window=week analytics answers in under a second. Skipped with
// -short; not built with -race, whose overhead makes timings meaningless.
func TestMetricsScale(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test")
	}
	ctx := context.Background()
	s := newStore(t)
	const hours = 14 * 24
	tr := metricstest.Traffic{Events: 1_000_000, APIs: 100, Callers: 5000, Hours: hours, Start: metricstest.Base}
	start := time.Now()
	require.NoError(t, tr.Fill(ctx, s, 20_000, nil))
	took := time.Since(start)
	var rollups, callerBytes, callers int64
	require.NoError(t, s.DB().QueryRow(`SELECT COUNT(*), SUM(length(caller_set) + length(source_set)) FROM usage_rollups`).Scan(&rollups, &callerBytes))
	require.NoError(t, s.DB().QueryRow(`SELECT COUNT(*) FROM usage_callers`).Scan(&callers))
	var pages, pageSize int64
	require.NoError(t, s.DB().QueryRow(`PRAGMA page_count`).Scan(&pages))
	require.NoError(t, s.DB().QueryRow(`PRAGMA page_size`).Scan(&pageSize))
	size := pages * pageSize
	t.Logf("1M events appended in %v (%.1f µs/event, generation included); %d rollups (caller and source sets %.1f MB), %d legacy callers; file %.0f MB",
		took, float64(took.Microseconds())/1e6, rollups, float64(callerBytes)/(1<<20), callers, float64(size)/(1<<20))

	end := tr.Start.Add(hours * time.Hour)
	for _, w := range []metrics.Window{metrics.WindowToday, metrics.WindowWeek, metrics.WindowOverall} {
		// Best of three, so a busy machine does not fail the test.
		var a *metrics.MarketplaceAnalytics
		best := time.Hour
		for range 3 {
			start := time.Now()
			var err error
			a, err = metrics.BuildMarketplaceAnalytics(ctx, s, metrics.AnalyticsOptions{Window: w, Now: end})
			best = min(best, time.Since(start))
			require.NoError(t, err)
		}
		require.NotEmpty(t, a.TopAPIs)
		t.Logf("window=%s: %v (calls=%d agents=%d apis=%d)", w, best, a.Hero.Calls, a.Hero.ActiveAgents, a.Hero.PublishedAPIs)
		if w == metrics.WindowWeek {
			require.Less(t, best, time.Second)
		}
	}
}
