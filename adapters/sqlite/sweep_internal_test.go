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
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := openSweepStore(t, filepath.Join(t.TempDir(), "t.db"), clock)
	return s, func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
}

// openSweepStore opens a Store on the file at path with the clock now.
func openSweepStore(t *testing.T, path string, now func() time.Time) *Store {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	s, err := NewWithConfig(db, Config{Now: now})
	require.NoError(t, err)
	return s
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

// The automatic sweep goes on where the last process left it: a Store
// opened again and again, each time for fewer writes than it takes to walk
// the table, still reaches the rows at the end of the table.
func TestAutomaticSweepSurvivesRestarts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "t.db")
	now := time.Unix(1_700_000_000, 0)
	s := openSweepStore(t, path, func() time.Time { return now })
	for i := range 200 {
		require.NoError(t, s.Set(ctx, fmt.Sprintf("a-%03d", i), []byte("v"), 0))
	}
	for i := range 50 {
		require.NoError(t, s.Set(ctx, fmt.Sprintf("z-%03d", i), []byte("v"), time.Minute))
	}
	later := now.Add(time.Hour)
	// 20 lifetimes of 40 writes, each visiting 4 chunks of 40 rows: one
	// lifetime alone never gets past the first 160 rows.
	for range 20 {
		s := openSweepStore(t, path, func() time.Time { return later })
		s.sweepEvery, s.sweepChunk = 10, 40
		for i := range 40 {
			require.NoError(t, s.Set(ctx, fmt.Sprintf("a-%03d", i), []byte("v"), 0))
		}
	}
	require.Equal(t, 200, kvRows(t, s), "the expired rows at the end were swept")
}

// A sweep step whose transaction cannot begin (another process holds the
// write lock past the busy timeout) fails and lets go of the cursor: the
// steps due after it run, and the expired rows go. The step's op was once
// never answered, which left the sweep's mutex held for good.
func TestSweepGoesOnAfterAFailedStep(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "t.db")
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(50)&_pragma=journal_mode(WAL)")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	s, err := NewWithConfig(db, Config{Now: clock, BusyTimeout: 200 * time.Millisecond})
	require.NoError(t, err)
	s.sweepEvery = 10
	for i := range 9 {
		require.NoError(t, s.Set(ctx, fmt.Sprintf("k-%02d", i), []byte("v"), time.Minute))
	}
	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()

	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
	require.NoError(t, err)
	t.Cleanup(func() { _ = other.Close() })
	conn, err := other.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, "BEGIN IMMEDIATE")
	require.NoError(t, err)
	stepped := make(chan struct{})
	go func() { s.afterKVWrite(ctx); close(stepped) }() // the 10th write: a step
	select {
	case <-stepped:
	case <-time.After(10 * time.Second):
		t.Fatal("the sweep step is still waiting")
	}
	_, err = conn.ExecContext(ctx, "COMMIT")
	require.NoError(t, err)

	for i := range 20 { // two more steps due
		require.NoError(t, s.Set(ctx, fmt.Sprintf("z-%03d", i), []byte("v"), 0))
	}
	var expired int
	require.NoError(t, s.db.QueryRow(`SELECT count(*) FROM kv WHERE exp IS NOT NULL AND exp <= ?`, clock().UnixNano()).Scan(&expired))
	require.Zero(t, expired)
}
