package memory_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/metrics/metricstest"
)

func TestEventsConformance(t *testing.T) {
	t.Parallel()
	metricstest.Run(t, func(t *testing.T) metrics.Store {
		s, err := memory.NewEvents(memory.EventsConfig{})
		require.NoError(t, err)
		return s
	})
}

func TestEventsRecentKeepsNewestAppended(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := memory.NewEvents(memory.EventsConfig{MaxRecent: 3})
	require.NoError(t, err)
	for i := range 10 {
		require.NoError(t, s.Append(ctx, metricstest.Event(fmt.Sprintf("r%d", i), "a", "x",
			metricstest.Base.Add(time.Duration(i)*time.Second), metrics.LifecycleServed, "0", 1)))
	}
	got, err := s.Recent(ctx, 100)
	require.NoError(t, err)
	require.Len(t, got, 3)
	require.Equal(t, "r9", got[0].RequestID)
	require.Equal(t, "r7", got[2].RequestID)
	// Rollups still hold every event.
	rs, err := s.Rollups(ctx, metrics.RollupQuery{})
	require.NoError(t, err)
	require.EqualValues(t, 10, rs[0].Calls)
}

func TestEventsDedupWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := metricstest.Base
	s, err := memory.NewEvents(memory.EventsConfig{DedupWindow: 48 * time.Hour, Now: func() time.Time { return now }})
	require.NoError(t, err)
	e := metricstest.Event("same", "a", "x", metricstest.Base, metrics.LifecycleServed, "0", 1)
	calls := func() int64 {
		rs, err := s.Rollups(ctx, metrics.RollupQuery{})
		require.NoError(t, err)
		return rs[0].Calls
	}

	tests := []struct {
		advance time.Duration
		want    int64
	}{
		{0, 1},                             // first append
		{47 * time.Hour, 1},                // still remembered
		{time.Hour, 1},                     // exactly 48h: still remembered
		{time.Nanosecond, 2},               // forgotten: counted again
		{47*time.Hour + time.Minute, 2},    // remembered from its second append
		{1*time.Hour + time.Nanosecond, 3}, // forgotten again
	}
	for i, tc := range tests {
		now = now.Add(tc.advance)
		require.NoError(t, s.Append(ctx, e))
		require.Equal(t, tc.want, calls(), "step %d", i)
	}
}

func TestEventsMaxDedup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := memory.NewEvents(memory.EventsConfig{MaxDedup: 2000})
	require.NoError(t, err)
	for i := range 5000 {
		require.NoError(t, s.Append(ctx, metricstest.Event(fmt.Sprintf("r%d", i), "a", "x", metricstest.Base, metrics.LifecycleServed, "0", 1)))
	}
	// r0 is forgotten (counted again), r4999 is remembered.
	require.NoError(t, s.Append(ctx,
		metricstest.Event("r0", "a", "x", metricstest.Base, metrics.LifecycleServed, "0", 1),
		metricstest.Event("r4999", "a", "x", metricstest.Base, metrics.LifecycleServed, "0", 1)))
	rs, err := s.Rollups(ctx, metrics.RollupQuery{})
	require.NoError(t, err)
	require.EqualValues(t, 5001, rs[0].Calls)
	require.LessOrEqual(t, s.DedupLen(), 2000)
}

func TestNewEventsRejectsNegativeConfig(t *testing.T) {
	t.Parallel()
	_, err := memory.NewEvents(memory.EventsConfig{MaxRecent: -1})
	require.Error(t, err)
}

func TestEventsCanceledContext(t *testing.T) {
	t.Parallel()
	s, err := memory.NewEvents(memory.EventsConfig{})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, s.Append(ctx, metricstest.Event("r", "a", "x", metricstest.Base, metrics.LifecycleServed, "0", 1)), context.Canceled)
	_, err = s.Recent(ctx, 1)
	require.ErrorIs(t, err, context.Canceled)
	_, err = s.Rollups(ctx, metrics.RollupQuery{})
	require.ErrorIs(t, err, context.Canceled)
}
