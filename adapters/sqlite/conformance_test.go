package sqlite_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/kv/kvtest"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ledger/ledgertest"
)

// The kv suite checks expiry with real 50 ms TTLs, so it does not run in
// parallel with this package's heavy multi-handle tests (a loaded machine
// under -race could otherwise let a TTL lapse between two calls).
func TestKVConformance(t *testing.T) {
	kvtest.Run(t, func(t *testing.T) kv.Store { return newStore(t) })
}

// TestKVReplicas runs the across-replica suite over several handles on one
// file (see handles), standing in for several processes.
func TestKVReplicas(t *testing.T) {
	t.Parallel()
	kvtest.RunReplicas(t, func(t *testing.T, n int) []kv.Store {
		var stores []kv.Store
		for _, s := range handles(t, n) {
			stores = append(stores, s)
		}
		return stores
	})
}

// plainKV hides the batch ability so the suite also runs kv.IncrAll's
// one-by-one fallback over SQLite.
type plainKV struct{ kv.Store }

func TestKVConformanceWithoutBatch(t *testing.T) {
	kvtest.Run(t, func(t *testing.T) kv.Store { return plainKV{newStore(t)} })
}

func TestLedgerConformance(t *testing.T) {
	t.Parallel()
	ledgertest.Run(t, func(t *testing.T) ledger.Store { return newStore(t) })
}

// One bad settlement in a group commit fails alone: appends with a status
// the table's CHECK refuses are mixed into concurrent good ones; every good
// one is stored, every bad one fails, nothing is stored twice, and the
// chain verifies with one record per entry.
func TestGroupCommitIsolatesAFailingMember(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	const n = 600
	var good atomic.Int64
	got := kvtest.Hammer(t, n, 48, func(i int) (bool, error) {
		e := ledgertest.Entry("group", fmt.Sprint(i), base)
		bad := i%10 == 3
		if bad {
			e.Status = "bogus"
		}
		_, err := s.AppendSettlement(ctx, e, ledgertest.Record(t, e))
		if bad {
			if err == nil {
				return false, fmt.Errorf("settlement %d with a bad status was stored", i)
			}
			return false, nil
		}
		if err == nil {
			good.Add(1)
		}
		return err == nil, err
	})
	require.Equal(t, int64(n-n/10), got)
	require.Equal(t, got, good.Load())
	entries, err := s.ListEntries(ctx, ledger.ListEntriesParams{Tenant: "group"})
	require.NoError(t, err)
	require.Len(t, entries, int(got))
	l, err := ledger.New(s, ledger.Config{})
	require.NoError(t, err)
	records, err := l.Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, got, records)
}
