package ledger_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/ledger"
)

// appendingStore appends one more settlement (as another replica would)
// right before the first ListEntries answers, that is after Verify walked
// the chain.
type appendingStore struct {
	ledger.Store
	once sync.Once
	l    *ledger.Ledger
	t    *testing.T
	add  []ledger.Entry // entries listed on top of the store's
}

func (s *appendingStore) ListEntries(ctx context.Context, p ledger.ListEntriesParams) ([]ledger.Entry, error) {
	s.once.Do(func() {
		if s.l != nil {
			_, _, err := s.l.RecordSettlement(ctx, settled("late"))
			require.NoError(s.t, err)
		}
	})
	es, err := s.Store.ListEntries(ctx, p)
	return append(es, s.add...), err
}

// A settlement committed while Verify runs (its entry seen, its record
// appended after the walk) is not a broken chain: Verify walks on.
func TestVerifyWhileAppending(t *testing.T) {
	ctx := context.Background()
	s := &appendingStore{Store: memory.NewLedger(), t: t}
	l := newLedger(t, s)
	s.l = l
	for _, k := range []string{"k1", "k2", "k3"} {
		_, _, err := l.RecordSettlement(ctx, settled(k))
		require.NoError(t, err)
	}
	n, err := l.Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(4), n, "the late record was walked too")
}

// An entry with no settlement record anywhere in the chain (inserted
// behind its back) is still found, after walking on to the end.
func TestVerifyFindsEntryWithoutRecord(t *testing.T) {
	ctx := context.Background()
	s := &appendingStore{Store: memory.NewLedger(), t: t, add: []ledger.Entry{settled("phantom")}}
	l := newLedger(t, s)
	_, _, err := l.RecordSettlement(ctx, settled("k1"))
	require.NoError(t, err)
	_, err = l.Verify(ctx)
	require.ErrorIs(t, err, ledger.ErrChainBroken)
	require.ErrorContains(t, err, "2 ledger entries but 1 settlement records")
}

// A second settlement record for an entry (appended through the store,
// hash-valid) is found too.
func TestVerifyFindsEntryRecordedTwice(t *testing.T) {
	ctx := context.Background()
	s := memory.NewLedger()
	l := newLedger(t, s)
	_, rec, err := l.RecordSettlement(ctx, settled("k1"))
	require.NoError(t, err)
	_, err = s.AppendAudit(ctx, ledger.AuditRecord{Time: rec.Time, Kind: rec.Kind, Tenant: rec.Tenant, Subject: rec.Subject, Data: rec.Data})
	require.NoError(t, err)
	_, err = l.Verify(ctx)
	require.ErrorIs(t, err, ledger.ErrChainBroken)
	require.ErrorContains(t, err, "recorded twice")
}
