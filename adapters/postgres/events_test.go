package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/metrics/metricstest"
)

func TestEventsConformance(t *testing.T) {
	t.Parallel()
	metricstest.Run(t, func(t *testing.T) metrics.Store {
		return newFastStore(t)
	})
}

func TestPurgeUsageEvents(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	ctx := context.Background()
	old := metricstest.Event("old", "a", "x", metricstest.Base, metrics.LifecycleServed, "0", 5)
	recent := metricstest.Event("new", "a", "x", metricstest.Base.Add(72*time.Hour), metrics.LifecycleServed, "0", 5)
	require.NoError(t, s.Append(ctx, old, recent))
	n, err := s.PurgeUsageEvents(ctx, metricstest.Base.Add(48*time.Hour))
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	evs, err := s.Recent(ctx, 10)
	require.NoError(t, err)
	require.Len(t, evs, 1)
	require.Equal(t, "new", evs[0].RequestID)
	rs, err := s.Rollups(ctx, metrics.RollupQuery{})
	require.NoError(t, err)
	require.Len(t, rs, 2, "rollups are kept")
}
