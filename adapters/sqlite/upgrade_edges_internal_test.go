package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ledger/ledgertest"
	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/metrics/metricstest"
)

// The append-only trigger refuses an INSERT OR REPLACE that conflicts on
// the rowid alone (REPLACE's implicit delete fires no DELETE trigger).
func TestLedgerReplaceByRowidRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "t.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	s, err := New(db)
	require.NoError(t, err)
	l, err := ledger.New(s, ledger.Config{})
	require.NoError(t, err)
	_, _, err = l.RecordSettlement(ctx, ledgertest.Entry("acme", "k0", time.Now()))
	require.NoError(t, err)
	var rowid int64
	require.NoError(t, db.QueryRow(`SELECT rowid FROM ledger`).Scan(&rowid))
	_, err = db.Exec(`INSERT OR REPLACE INTO ledger (rowid, id, tenant, idempotency_key, owner, payer, amount, amount_atomic, asset,
		network, pay_to, tx_hash, status, request_id, resource, time_us) VALUES (?, 'forged', 'acme', 'other', '', '', '0', '0', '', '', '', '', 'failed', '', '', 0)`, rowid)
	require.ErrorContains(t, err, "append-only", "a REPLACE on the rowid must be refused too")
}

// A usage batch that fails (here: a rollup row it must fold into is
// unreadable) fails alone: its caller gets the error, and the other ops of
// its group commit with the group, each run once (without the batch's
// savepoint the whole group was rolled back and every op run again alone).
func TestFailingUsageBatchFailsAlone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "t.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	s, err := New(db)
	require.NoError(t, err)

	ev := metricstest.Event("r1", "a", "x", metricstest.Base, metrics.LifecycleServed, "0", 5)
	require.NoError(t, s.Append(ctx, ev))
	_, err = db.Exec(`UPDATE usage_rollups SET latency = X'FF'`)
	require.NoError(t, err)

	// Hold the write lock so that every op below lands in one group.
	require.NoError(t, s.lockWrite(ctx))
	const n = 50
	var runs atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.group(ctx, func(g *groupTx) error {
				runs.Add(1)
				_, err := g.exec(setSQL, fmt.Sprintf("k%d", i), []byte("v"), nil)
				return err
			})
		}()
	}
	var appendErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		appendErr = s.Append(ctx, metricstest.Event("r2", "a", "x", metricstest.Base, metrics.LifecycleServed, "0", 5))
	}()
	// The committer takes what is queued, then waits for the lock; what
	// queues meanwhile joins the same transaction once it has it.
	time.Sleep(300 * time.Millisecond)
	s.unlockWrite()
	wg.Wait()
	require.Error(t, appendErr)
	for _, err := range errs {
		require.NoError(t, err)
	}
	for i := range n {
		_, err := s.Get(ctx, fmt.Sprintf("k%d", i))
		require.NoError(t, err)
	}
	require.Equal(t, int64(n), runs.Load(), "each op once, in one commit; a failing usage batch should fail alone")
}

// Migration 7 keeps what a kv row holds: an empty value, a counter with a
// TTL, an expired counter (still absent), a zero-TTL value.
func TestKVRebuildEdgeValues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openAtVersion(t, 6)
	now := time.Now()
	live, dead := now.Add(time.Hour).UnixNano(), now.Add(-time.Hour).UnixNano()
	_, err := db.Exec(`INSERT INTO kv (key, v, n, exp) VALUES ('empty', X'', NULL, NULL), ('c', NULL, 7, ?), ('dead', NULL, 9, ?), ('', X'01', NULL, ?)`, live, dead, live)
	require.NoError(t, err)
	s, err := New(db)
	require.NoError(t, err)
	got, err := s.Get(ctx, "empty")
	require.NoError(t, err)
	require.Equal(t, []byte{}, got)
	got, err = s.Get(ctx, "c")
	require.NoError(t, err)
	require.Equal(t, "7", string(got))
	var exp int64
	require.NoError(t, db.QueryRow(`SELECT exp FROM kv WHERE key = 'c'`).Scan(&exp))
	require.Equal(t, live, exp, "TTL kept")
	_, err = s.Get(ctx, "dead")
	require.ErrorIs(t, err, kv.ErrNotFound)
	v, ok, err := s.Incr(ctx, "dead", kv.Increment{Delta: 1, Max: kv.Unbounded})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(1), v, "an expired counter starts again")
	got, err = s.Get(ctx, "")
	require.NoError(t, err)
	require.Equal(t, []byte{1}, got)
}

// Rowid reuse: rows added after the tail was deleted get rowids at or
// below the saved cursor; the automatic sweep still reaches them (on its
// next pass), across restarts.
func TestSweepRowidReuseAcrossRestarts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "t.db")
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	s := openSweepStore(t, path, clock)
	s.sweepEvery, s.sweepChunk = 1<<30, 40
	for i := range 100 {
		require.NoError(t, s.Set(ctx, fmt.Sprintf("keep-%03d", i), []byte("v"), 0))
	}
	for i := range 100 {
		require.NoError(t, s.Set(ctx, fmt.Sprintf("tail-%03d", i), []byte("v"), 0))
	}
	c := &sweepCursor{loaded: true}
	for range 4 { // cursor at rowid 160, saved
		_, _, err := s.sweepStep(ctx, c, 40, true)
		require.NoError(t, err)
	}
	require.Equal(t, int64(160), c.after)
	for i := range 100 {
		require.NoError(t, s.Delete(ctx, fmt.Sprintf("tail-%03d", i)))
	}
	// New rows reuse rowids 101.., below the cursor.
	for i := range 50 {
		require.NoError(t, s.Set(ctx, fmt.Sprintf("short-%03d", i), []byte("v"), time.Minute))
	}
	advance(time.Hour)
	for range 10 {
		s := openSweepStore(t, path, clock)
		s.sweepEvery, s.sweepChunk = 5, 40
		for i := range 10 {
			require.NoError(t, s.Set(ctx, fmt.Sprintf("keep-%03d", i), []byte("v"), 0))
		}
	}
	require.Equal(t, 100, kvRows(t, s))
}
