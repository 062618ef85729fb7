package memory_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/metrics/metricstest"
)

// TestEventsCallerMemoryBounded is the security finding: the store
// interned every caller id forever, refused requests included, and kept
// every caller of an hour in its rollup. 300,000 distinct callers (half of
// them refused by a rate limit) now leave a bounded rollup behind, and the
// window's unique callers are still estimated within 2%.
//
// The 300,000-caller run is in events_bound_norace_test.go (the race
// detector makes it slow); this one runs everywhere with 20,000.
func TestEventsCallerMemoryBounded(t *testing.T) {
	t.Parallel()
	callerMemoryBounded(t, 20_000)
}

func callerMemoryBounded(t *testing.T, callers int) {
	ctx := context.Background()
	s, err := memory.NewEvents(memory.EventsConfig{MaxRecent: 100})
	require.NoError(t, err)
	batch := make([]metrics.UsageEvent, 0, 1000)
	for i := range callers {
		lc := metrics.LifecycleServed
		if i%2 == 1 {
			lc = metrics.LifecycleRateLimited // refused: never a call
		}
		at := metricstest.Base.Add(time.Duration(i) * time.Millisecond) // one hour
		e := metricstest.Event(fmt.Sprint("r", i), "api", fmt.Sprint("agent-", i), at, lc, "0", 5)
		e.ClientNet = metrics.HashClientNet(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
		batch = append(batch, e)
		if len(batch) == cap(batch) {
			require.NoError(t, s.Append(ctx, batch...))
			batch = batch[:0]
		}
	}
	networks := (callers-1)>>8 + 1 // one source per /24
	sourceIDs := networks
	if networks > metrics.ExactCallers {
		sourceIDs = metrics.HeavyHitters
	}
	rollups, ids := s.RollupSize()
	require.Equal(t, 1, rollups)
	require.LessOrEqual(t, ids, metrics.HeavyHitters+sourceIDs+3, "sketched callers, the sources, the interned api, owner, directory")

	a, err := metrics.BuildMarketplaceAnalytics(ctx, s, metrics.AnalyticsOptions{Window: metrics.WindowToday, Now: metricstest.Base.Add(time.Hour)})
	require.NoError(t, err)
	require.Len(t, a.TopAPIs, 1)
	require.EqualValues(t, callers/2, a.TopAPIs[0].Calls)
	t.Logf("%d callers: %d rollup, %d ids held; unique callers %d (+%.2f%%)", callers, rollups, ids,
		a.TopAPIs[0].UniqueCallers, 100*(float64(a.TopAPIs[0].UniqueCallers)/float64(callers/2)-1))
	require.InEpsilon(t, callers/2, a.TopAPIs[0].UniqueCallers, 0.02)
	require.InEpsilon(t, networks, a.TopAPIs[0].UniqueSources, 0.03)
	require.InEpsilon(t, callers/2, a.Hero.ActiveAgents, 0.02)
}
