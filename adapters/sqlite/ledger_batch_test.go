package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ledger/ledgertest"
)

// Settlements are appended in multi-row statements per group. Many
// concurrent appends, half of them with keys already stored (which makes
// the trigger refuse a whole statement) and some racing each other for one
// new key (duplicates inside one group), store each key exactly once,
// answer every duplicate with ErrDuplicate, interleave with audit-only
// records, and leave a chain that verifies.
func TestLedgerBatchedAppendsWithDuplicates(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const stored, fresh = 150, 150
	for i := range stored {
		e := ledgertest.Entry("acme", fmt.Sprint("old-", i), base)
		_, err := s.AppendSettlement(ctx, e, ledgertest.Record(t, e))
		require.NoError(t, err)
	}
	var (
		wg              sync.WaitGroup
		ok, dup, audits atomic.Int64
		errs            = make(chan error, 4*(stored+fresh))
		start           = make(chan struct{})
	)
	run := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := f(); err != nil {
				errs <- err
			}
		}()
	}
	settle := func(key string) func() error {
		return func() error {
			e := ledgertest.Entry("acme", key, base.Add(time.Minute))
			_, err := s.AppendSettlement(ctx, e, ledgertest.Record(t, e))
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ledger.ErrDuplicate):
				dup.Add(1)
			default:
				return err
			}
			return nil
		}
	}
	for i := range stored {
		run(settle(fmt.Sprint("old-", i)))
	}
	for i := range fresh {
		run(settle(fmt.Sprint("new-", i)))
		run(settle(fmt.Sprint("new-", i))) // its rival
		run(func() error {
			_, err := s.AppendAudit(ctx, ledger.AuditRecord{Time: base, Kind: "test_event", Subject: fmt.Sprint(i), Data: []byte(`{}`)})
			if err == nil {
				audits.Add(1)
			}
			return err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.EqualValues(t, fresh, ok.Load(), "each new key stored once")
	require.EqualValues(t, stored+fresh, dup.Load(), "every stored key and every rival is a duplicate")
	require.EqualValues(t, fresh, audits.Load())

	entries, err := s.ListEntries(ctx, ledger.ListEntriesParams{})
	require.NoError(t, err)
	require.Len(t, entries, stored+fresh)
	recs, err := s.ListAudit(ctx, ledger.ListAuditParams{})
	require.NoError(t, err)
	require.Len(t, recs, stored+2*fresh)
	for i, r := range recs {
		require.EqualValues(t, i+1, r.Seq)
	}
	l, err := ledger.New(s, ledger.Config{})
	require.NoError(t, err)
	n, err := l.Verify(ctx)
	require.NoError(t, err)
	require.EqualValues(t, stored+2*fresh, n)
}
