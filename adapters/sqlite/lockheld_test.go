package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/sqlite"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ledger/ledgertest"
)

// holdWriteLock takes the file's write lock on a handle of its own (another
// process, as far as the Store can tell) and returns its release.
func holdWriteLock(t *testing.T, path string) (release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := openDB(t, path).Conn(ctx)
	require.NoError(t, err)
	_, err = conn.ExecContext(ctx, "BEGIN IMMEDIATE")
	require.NoError(t, err)
	released := false
	release = func() {
		if !released {
			released = true
			_, err := conn.ExecContext(ctx, "COMMIT")
			require.NoError(t, err)
			require.NoError(t, conn.Close())
		}
	}
	t.Cleanup(release)
	return release
}

// shortBusyStore opens a Store on a fresh file whose connections wait
// only 50 ms for a busy lock and which retries BEGIN for busy.
func shortBusyStore(t *testing.T, busy time.Duration) (string, *sqlite.Store) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "t.db")
	s, err := sqlite.NewWithConfig(openDB(t, path, "?_pragma=busy_timeout(50)&_pragma=journal_mode(WAL)"),
		sqlite.Config{BusyTimeout: busy})
	require.NoError(t, err)
	return path, s
}

// within runs f and fails the test if it has not returned after d.
func within[T any](t *testing.T, d time.Duration, what string, f func() T) T {
	t.Helper()
	done := make(chan T, 1)
	go func() { done <- f() }()
	select {
	case v := <-done:
		return v
	case <-time.After(d):
		t.Fatalf("%s: still waiting after %s", what, d)
		panic("unreachable")
	}
}

// While another process holds the write lock past the busy timeout, a
// write whose transaction cannot begin is answered with the error (it was
// once left waiting for good), and ledger lookups, which take no write
// lock, are answered at once, hit or miss.
func TestWriteLockHeldElsewhere(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path, s := shortBusyStore(t, 200*time.Millisecond)
	e := ledgertest.Entry("acme", "settled", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	_, err := s.AppendSettlement(ctx, e, ledgertest.Record(t, e))
	require.NoError(t, err)

	release := holdWriteLock(t, path)
	err = within(t, 10*time.Second, "Set under another process's lock", func() error {
		return s.Set(ctx, "k", []byte("v"), 0)
	})
	require.ErrorContains(t, err, "begin")
	// A lookup that took the write lock would fail like the Set did.
	got, err := s.GetEntry(ctx, "acme", "settled")
	require.NoError(t, err)
	require.Equal(t, e.ID, got.ID)
	_, err = s.GetEntry(ctx, "acme", "not-settled")
	require.ErrorIs(t, err, ledger.ErrNotFound)

	release()
	require.NoError(t, s.Set(ctx, "k", []byte("v"), 0))
	v, err := s.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "v", string(v))
}

// Callers stop waiting when their context ends: a read at once, a write
// while it is still queued, and that write is then never applied.
func TestQueuedOpsHonourTheirContext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path, s := shortBusyStore(t, 5*time.Second)
	release := holdWriteLock(t, path)
	// The committer takes this write and waits for the lock.
	first := make(chan error, 1)
	go func() { first <- s.Set(ctx, "first", []byte("v"), 0) }()

	short := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, 100*time.Millisecond)
	}
	// Lookups answer until the committer has taken the write; from then on
	// a lookup waits behind it, and returns with its deadline.
	var err error
	stuck := false
	for range 50 {
		err = within(t, 5*time.Second, "a lookup behind a stuck group", func() error {
			c, cancel := short()
			defer cancel()
			_, err := s.GetEntry(c, "acme", "k")
			return err
		})
		if !errors.Is(err, ledger.ErrNotFound) {
			require.ErrorIs(t, err, context.DeadlineExceeded)
			stuck = true
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.True(t, stuck, "the committer never took the write")
	err = within(t, 5*time.Second, "a queued write", func() error {
		c, cancel := short()
		defer cancel()
		return s.Set(c, "queued", []byte("v"), 0)
	})
	require.ErrorIs(t, err, context.DeadlineExceeded)

	release()
	require.NoError(t, within(t, 10*time.Second, "the write taken before", func() error { return <-first }))
	_, err = s.Get(ctx, "first")
	require.NoError(t, err)
	_, err = s.Get(ctx, "queued")
	require.ErrorIs(t, err, kv.ErrNotFound, "a write its caller gave up on while queued was applied")
}

// Callers giving up at random moments never leave a write half-known:
// 64 goroutines race pairwise for keys with SetNX under deadlines of 0 to
// 2 ms. A key is stored exactly when one of its callers was told it won,
// and no key has two winners.
func TestGivingUpNeverHidesAWrite(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	const workers, keys = 64, 200
	var (
		mu   sync.Mutex
		wins = make(map[string]int)
		wg   sync.WaitGroup
		errs = make(chan error, workers*keys)
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range keys {
				key := fmt.Sprintf("k-%d-%d", w/2, i) // two workers per key
				c, cancel := context.WithTimeout(ctx, time.Duration(r.IntN(2000))*time.Microsecond)
				won, err := s.SetNX(c, key, []byte("v"), 0)
				cancel()
				switch {
				case err == nil && won:
					mu.Lock()
					wins[key]++
					mu.Unlock()
				case err != nil && !errors.Is(err, context.DeadlineExceeded):
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	stored := 0
	for w := 0; w < workers; w += 2 {
		for i := range keys {
			key := fmt.Sprintf("k-%d-%d", w/2, i)
			_, err := s.Get(ctx, key)
			switch {
			case err == nil:
				stored++
				require.Equal(t, 1, wins[key], "key %s is stored: exactly one caller must have won it", key)
			case errors.Is(err, kv.ErrNotFound):
				require.Zero(t, wins[key], "key %s is not stored but a caller was told it won", key)
			default:
				require.NoError(t, err)
			}
		}
	}
	t.Logf("%d of %d keys stored", stored, workers/2*keys)
}
