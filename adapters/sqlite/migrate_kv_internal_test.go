package sqlite

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/kv"
)

// TestKVRebuildKeepsTheRows opens a database that stopped at migration 6,
// with values, counters and expired rows in its kv table and a sweep
// cursor, with this code: migration 7 moves the rows into a rowid table,
// every live value and counter reads back as it was, an expired row is
// still absent and goes at the next sweep, and keys stay unique.
func TestKVRebuildKeepsTheRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openAtVersion(t, 6)
	now := time.Now()
	live := now.Add(time.Hour).UnixNano()
	for i := range 50 {
		_, err := db.Exec(`INSERT INTO kv (key, v, n, exp) VALUES (?, ?, NULL, ?)`, fmt.Sprintf("val:%02d", i), []byte(fmt.Sprint("v", i)), live)
		require.NoError(t, err)
	}
	_, err := db.Exec(`INSERT INTO kv (key, v, n, exp) VALUES ('count', NULL, 41, NULL), ('gone', X'00', NULL, ?), ('forever', X'6869', NULL, NULL)`,
		now.Add(-time.Minute).UnixNano())
	require.NoError(t, err)
	_, err = db.Exec(`INSERT INTO kv_sweep (id, started, after) VALUES (1, 1, 'val:20')`)
	require.NoError(t, err)

	s, err := New(db)
	require.NoError(t, err)
	v, err := s.SchemaVersion(ctx)
	require.NoError(t, err)
	require.Equal(t, LatestSchemaVersion(), v)

	for i := range 50 {
		got, err := s.Get(ctx, fmt.Sprintf("val:%02d", i))
		require.NoError(t, err)
		require.Equal(t, fmt.Sprint("v", i), string(got))
	}
	got, err := s.Get(ctx, "forever")
	require.NoError(t, err)
	require.Equal(t, "hi", string(got))
	_, err = s.Get(ctx, "gone")
	require.ErrorIs(t, err, kv.ErrNotFound)
	n, ok, err := s.Incr(ctx, "count", kv.Increment{Delta: 1, Max: kv.Unbounded})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(42), n)
	won, err := s.SetNX(ctx, "val:07", []byte("other"), time.Hour)
	require.NoError(t, err)
	require.False(t, won, "a key moved by the rebuild is still taken")
	_, err = db.Exec(`INSERT INTO kv (key, v) VALUES ('val:07', X'00')`)
	require.ErrorContains(t, err, "UNIQUE", "keys stay unique")

	swept, err := s.SweepExpired(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), swept, "the expired row goes, nothing else")
	var rows int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM kv`).Scan(&rows))
	require.Equal(t, 52, rows)
}
