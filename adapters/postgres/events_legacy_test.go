package postgres_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/metrics/metricstest"
)

// TestRollupsFromBeforeCallerSets reads a rollup written before migration 5
// (callers in usage_rollup_callers, caller_set NULL): its callers are kept,
// its sources are its callers, and the next append converts the row to the
// bounded form and drops its usage_rollup_callers rows.
func TestRollupsFromBeforeCallerSets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool, schema := newStore(t)
	rollups := pgx.Identifier{schema, "usage_rollups"}.Sanitize()
	callers := pgx.Identifier{schema, "usage_rollup_callers"}.Sanitize()
	hour := metricstest.Base
	c1, c2 := metrics.HashCaller("old-1"), metrics.HashCaller("old-2")
	var lat metrics.LatencyHistogram
	for range 3 {
		lat.Observe(10)
	}
	_, err := pool.Exec(ctx, `INSERT INTO `+rollups+` (hour, api_id, owner, directory, events, calls, errors, revenue_micros, latency)
		VALUES ($1, 'a', 'owner-a', 'data', 3, 3, 0, 0, $2)`, hour, lat[:])
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO `+callers+` (hour, api_id, caller_id, calls) VALUES ($1, 'a', $2, 2), ($1, 'a', $3, 1)`, hour, c1, c2)
	require.NoError(t, err)

	rs, err := s.Rollups(ctx, metrics.RollupQuery{})
	require.NoError(t, err)
	require.Len(t, rs, 1)
	got, _ := rs[0].Callers.Counts()
	require.Equal(t, map[string]int64{c1: 2, c2: 1}, got)
	got, _ = rs[0].Sources.Counts()
	require.Equal(t, map[string]int64{c1: 2, c2: 1}, got, "old events had neither network nor payer")

	net := metrics.HashClientNet(netip.MustParseAddr("203.0.113.5"))
	e := metricstest.Event("new", "a", "new-caller", hour.Add(10*time.Minute), metrics.LifecycleServed, "0", 5)
	e.ClientNet = net
	require.NoError(t, s.Append(ctx, e))
	rs, err = s.Rollups(ctx, metrics.RollupQuery{})
	require.NoError(t, err)
	require.Len(t, rs, 1)
	require.EqualValues(t, 4, rs[0].Calls)
	got, _ = rs[0].Callers.Counts()
	require.Equal(t, map[string]int64{c1: 2, c2: 1, metrics.HashCaller("new-caller"): 1}, got)
	got, _ = rs[0].Sources.Counts()
	require.Equal(t, map[string]int64{c1: 2, c2: 1, net: 1}, got)
	var legacy int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM `+callers).Scan(&legacy))
	require.Zero(t, legacy, "the converted row's old caller rows are gone")
}
