package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"
)

// sweepStore is a Store on a fresh file with a clock the test moves.
func sweepStore(t *testing.T) (*Store, func(time.Duration)) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "t.db")+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	s, err := NewWithConfig(db, Config{Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
	require.NoError(t, err)
	return s, func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
}

func kvRows(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	require.NoError(t, s.db.QueryRow("SELECT count(*) FROM kv").Scan(&n))
	return n
}

// SweepExpired visits the whole table however many chunks it takes, and
// deletes exactly the expired rows: keys without a TTL, keys not yet
// expired and the empty key stay.
func TestSweepExpiredVisitsEveryChunk(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, advance := sweepStore(t)
	s.sweepEvery = 1 << 30 // no automatic sweep here
	s.sweepChunk = 7
	for i := range 50 {
		require.NoError(t, s.Set(ctx, fmt.Sprintf("short-%03d", i), []byte("v"), time.Minute))
		require.NoError(t, s.Set(ctx, fmt.Sprintf("long-%03d", i), []byte("v"), time.Hour))
	}
	require.NoError(t, s.Set(ctx, "", []byte("v"), time.Minute))
	require.NoError(t, s.Set(ctx, "forever", []byte("v"), 0))
	advance(2 * time.Minute)
	n, err := s.SweepExpired(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(51), n)
	require.Equal(t, 51, kvRows(t, s), "the 50 long keys and the one without a TTL")
	n, err = s.SweepExpired(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	advance(time.Hour)
	n, err = s.SweepExpired(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(50), n)
	_, err = s.Get(ctx, "forever")
	require.NoError(t, err)
}

// The automatic sweep goes on where it stopped, a chunk after every
// sweepEvery writes, wraps around at the end of the table, and so deletes
// every expired row while writes go on.
func TestAutomaticSweepWrapsAround(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, advance := sweepStore(t)
	s.sweepEvery, s.sweepChunk = 10, 40 // 40 rows visited per 10 writes
	for i := range 200 {
		require.NoError(t, s.Set(ctx, fmt.Sprintf("old-%03d", i), []byte("v"), time.Minute))
	}
	advance(2 * time.Minute)
	// Each write adds a row that stays; sweeping outpaces them.
	for i := range 200 {
		require.NoError(t, s.Set(ctx, fmt.Sprintf("new-%03d", i), []byte("v"), time.Hour))
	}
	require.Equal(t, 200, kvRows(t, s), "every expired row was swept, no live one")
	// The new rows expire; the next writes' sweeps must come back to them
	// from the table's end.
	advance(2 * time.Hour)
	for i := range 200 {
		require.NoError(t, s.Set(ctx, fmt.Sprintf("x-%03d", i), []byte("v"), time.Hour))
	}
	require.Equal(t, 200, kvRows(t, s))
	_, err := s.Get(ctx, "x-000")
	require.NoError(t, err)
}
