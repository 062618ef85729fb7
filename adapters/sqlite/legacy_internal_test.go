package sqlite

import (
	"context"
	"database/sql"
	"encoding/binary"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/metrics/metricstest"
)

// TestRollupsFromBeforeCallerSets reads a rollup row written before
// migration 4 (callers packed by usage_callers id, caller_set NULL): its
// callers are kept, its sources are its callers, and the next append
// rewrites it in the bounded form.
func TestRollupsFromBeforeCallerSets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "legacy.db")+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	s, err := New(db)
	require.NoError(t, err)

	c1, c2 := metrics.HashCaller("old-1"), metrics.HashCaller("old-2")
	_, err = db.Exec(`INSERT INTO usage_callers (id, caller_id) VALUES (1, ?), (2, ?)`, c1, c2)
	require.NoError(t, err)
	var packed []byte
	for _, p := range [][2]uint64{{1, 2}, {2, 1}} {
		packed = binary.AppendUvarint(binary.AppendUvarint(packed, p[0]), p[1])
	}
	var lat metrics.LatencyHistogram
	for range 3 {
		lat.Observe(10)
	}
	hour := metricstest.Base
	_, err = db.Exec(`INSERT INTO usage_rollups (hour, api_id, owner, directory, events, calls, errors, revenue_micros, latency, callers)
		VALUES (?, 'a', 'owner-a', 'data', 3, 3, 0, 0, ?, ?)`, hour.Unix(), encodeLatency(&lat), packed)
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
	var legacyLen int
	var converted bool
	require.NoError(t, db.QueryRow(`SELECT length(callers), caller_set IS NOT NULL FROM usage_rollups`).Scan(&legacyLen, &converted))
	require.Zero(t, legacyLen)
	require.True(t, converted)
	var callers int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM usage_callers`).Scan(&callers))
	require.Equal(t, 2, callers, "new callers are not numbered any more")
}
