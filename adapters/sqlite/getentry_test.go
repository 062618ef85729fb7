package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/sqlite"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ledger/ledgertest"
)

// GetEntry answers on the group committer's connection. That connection
// keeps its page cache from transaction to transaction, so a lookup must
// still see what another handle on the file (another process) appended
// after this Store last looked: a miss, then the other handle's append,
// then a hit.
func TestGetEntrySeesAnotherHandlesAppend(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "t.db")
	a, err := sqlite.New(openDB(t, path))
	require.NoError(t, err)
	b, err := sqlite.New(openDB(t, path))
	require.NoError(t, err)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 20 {
		key := fmt.Sprint("k-", i)
		_, err := b.GetEntry(ctx, "acme", key)
		require.ErrorIs(t, err, ledger.ErrNotFound)
		// b's committer writes too, so its cache holds the index pages.
		require.NoError(t, b.Set(ctx, fmt.Sprint("kv-", i), []byte("v"), 0))
		e := ledgertest.Entry("acme", key, base)
		_, err = a.AppendSettlement(ctx, e, ledgertest.Record(t, e))
		require.NoError(t, err)
		got, err := b.GetEntry(ctx, "acme", key)
		require.NoError(t, err, "b does not see a's entry %d", i)
		require.Equal(t, e.ID, got.ID)
	}
}

// A lookup whose context ended is an error, never "not found": a paid
// request takes ErrNotFound as leave to verify and settle.
func TestGetEntryCancelledIsNotNotFound(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.GetEntry(ctx, "acme", "k")
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, ledger.ErrNotFound)
}

// Lookups queued with appends in the same groups: every append that
// returned is found by a lookup made after it, and keys never appended are
// not found, exactly, under 64 goroutines.
func TestGetEntryAmongConcurrentAppends(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const workers, each = 64, 20
	var (
		wg            sync.WaitGroup
		found, absent atomic.Int64
		errs          = make(chan error, workers*each)
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				key := fmt.Sprintf("w%d-%d", w, i)
				e := ledgertest.Entry("acme", key, base)
				if _, err := s.AppendSettlement(ctx, e, ledgertest.Record(t, e)); err != nil {
					errs <- err
					return
				}
				got, err := s.GetEntry(ctx, "acme", key)
				switch {
				case err != nil:
					errs <- fmt.Errorf("%s: %w", key, err)
				case got.ID != e.ID:
					errs <- fmt.Errorf("%s: entry %s, want %s", key, got.ID, e.ID)
				default:
					found.Add(1)
				}
				_, err = s.GetEntry(ctx, "acme", key+"-never")
				if errors.Is(err, ledger.ErrNotFound) {
					absent.Add(1)
				} else {
					errs <- fmt.Errorf("%s-never: %v", key, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	require.Equal(t, int64(workers*each), found.Load())
	require.Equal(t, int64(workers*each), absent.Load())
}
