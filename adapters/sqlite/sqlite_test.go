package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/sqlite"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/kv/kvtest"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ledger/ledgertest"
)

// handles opens n handles, each with its own Store, on one file: they stand
// in for n processes. Every other handle has no busy_timeout, so the
// adapter's own SQLITE_BUSY retry is exercised too.
func handles(t *testing.T, n int) []*sqlite.Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "shared.db")
	stores := make([]*sqlite.Store, n)
	for i := range stores {
		pragmas := dsnPragmas
		if i%2 == 1 {
			pragmas = "?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
		}
		s, err := sqlite.New(openDB(t, path, pragmas))
		require.NoError(t, err)
		stores[i] = s
	}
	return stores
}

// run calls fn(i) for i in [0, attempts) over workers goroutines and
// returns how many returned true.
func run(t *testing.T, attempts, workers int, fn func(i int) (bool, error)) int64 {
	t.Helper()
	return kvtest.Hammer(t, attempts, workers, fn)
}

func TestKVExactAcrossHandles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const limit = 40
	stores := handles(t, 4)

	got := run(t, 20*limit, 48, func(i int) (bool, error) {
		_, ok, err := stores[i%len(stores)].Incr(ctx, "quota", kv.Increment{Delta: 1, Max: limit, TTL: time.Hour})
		return ok, err
	})
	require.Equal(t, int64(limit), got, "exactly the limit is admitted")

	keys := []string{"day", "month"}
	ins := []kv.Increment{{Delta: 1, Max: limit, TTL: time.Hour}, {Delta: 1, Max: limit + 5, TTL: time.Hour}}
	got = run(t, 20*limit, 48, func(i int) (bool, error) {
		_, refused, err := stores[i%len(stores)].IncrAll(ctx, keys, ins)
		return refused < 0, err
	})
	require.Equal(t, int64(limit), got)

	got = run(t, 200, 48, func(i int) (bool, error) {
		return stores[i%len(stores)].SetNX(ctx, "lock", []byte(fmt.Sprint(i)), time.Hour)
	})
	require.Equal(t, int64(1), got)

	for _, s := range stores {
		for key, want := range map[string]string{"quota": "40", "day": "40", "month": "40"} {
			v, err := s.Get(ctx, key)
			require.NoError(t, err)
			require.Equal(t, want, string(v), key)
		}
	}
}

func TestLedgerAcrossHandles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	stores := handles(t, 4)
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	const n = 400
	// Every key is attempted twice, from different handles.
	got := run(t, 2*n, 48, func(i int) (bool, error) {
		s := stores[i%len(stores)]
		if i%7 == 0 {
			_, err := s.AppendAudit(ctx, ledger.AuditRecord{Time: base, Kind: "swap", Data: []byte(`{}`)})
			return false, err
		}
		e := ledgertest.Entry("acme", fmt.Sprintf("k%d", i/2), base.Add(time.Duration(i)*time.Millisecond))
		_, err := s.AppendSettlement(ctx, e, ledgertest.Record(t, e))
		if errors.Is(err, ledger.ErrDuplicate) {
			return false, nil
		}
		return err == nil, err
	})
	// Keys whose both attempts were audit-only turns (i%7==0) are never written.
	want := int64(0)
	for k := 0; k < n; k++ {
		if (2*k)%7 != 0 || (2*k+1)%7 != 0 {
			want++
		}
	}
	require.Equal(t, want, got, "each key stored exactly once")
	audits := int64(0)
	for i := 0; i < 2*n; i++ {
		if i%7 == 0 {
			audits++
		}
	}
	for _, s := range stores {
		l, err := ledger.New(s, ledger.Config{})
		require.NoError(t, err)
		count, err := l.Verify(ctx)
		require.NoError(t, err)
		require.Equal(t, want+audits, count, "one contiguous chain, seen from every handle")
	}
	entries, err := stores[0].ListEntries(ctx, ledger.ListEntriesParams{Tenant: "acme"})
	require.NoError(t, err)
	require.Len(t, entries, int(want))
}

func TestMigrations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")

	// Several handles migrate a fresh file at once: each migration once.
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = sqlite.New(openDB(t, path))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	db := openDB(t, path)
	s, err := sqlite.New(db) // and once more: harmless
	require.NoError(t, err)
	v, err := s.SchemaVersion(ctx)
	require.NoError(t, err)
	require.Equal(t, sqlite.LatestSchemaVersion(), v)
	require.GreaterOrEqual(t, v, 1)
	var rows int
	require.NoError(t, db.QueryRow(`SELECT COUNT(*) FROM schema_migrations`).Scan(&rows))
	require.Equal(t, v, rows)

	for _, table := range []string{"tenants", "users", "api_keys", "ledger", "audit_log", "kv", "schema_migrations", "usage_events", "usage_rollups", "usage_callers"} {
		var name string
		require.NoError(t, db.QueryRow(`SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?`, table).Scan(&name), table)
	}

	// A database from the future is refused.
	_, err = db.Exec(`INSERT INTO schema_migrations (version, name, applied_us) VALUES (?, 'future', 0)`, v+98)
	require.NoError(t, err)
	_, err = sqlite.New(db)
	require.ErrorIs(t, err, sqlite.ErrSchemaTooNew)
	require.Contains(t, err.Error(), fmt.Sprintf("version %d", v+98))
}

func TestNewNil(t *testing.T) {
	_, err := sqlite.New(nil)
	require.Error(t, err)
}

func TestLedgerAndAuditAreAppendOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	l, err := ledger.New(s, ledger.Config{})
	require.NoError(t, err)
	_, _, err = l.RecordSettlement(ctx, ledger.Entry{Tenant: "acme", IdempotencyKey: "k", Amount: "1", AmountAtomic: "1000000", Status: ledger.StatusSettled})
	require.NoError(t, err)
	for _, stmt := range []string{
		`UPDATE ledger SET amount = '0'`,
		`DELETE FROM ledger`,
		`UPDATE audit_log SET data = '{}'`,
		`DELETE FROM audit_log`,
		`INSERT OR REPLACE INTO audit_log SELECT * FROM audit_log`,
		`REPLACE INTO ledger SELECT * FROM ledger`,
		`INSERT INTO ledger SELECT * FROM ledger WHERE true ON CONFLICT DO UPDATE SET amount = '0'`,
	} {
		_, err := s.DB().Exec(stmt)
		require.Error(t, err, stmt)
		require.Contains(t, err.Error(), "append-only", stmt)
	}
	n, err := l.Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
}

func TestTamperingIsDetected(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		sql     []string
		wantSeq int64
		reason  string
	}{
		{"audit data rewritten", []string{
			`DROP TRIGGER audit_log_no_update`,
			`UPDATE audit_log SET data = '{"version":666}' WHERE seq = 4`,
		}, 4, "hash"},
		{"audit record rewritten and rehashed by a careless attacker", []string{
			`DROP TRIGGER audit_log_no_update`,
			`UPDATE audit_log SET hash = '` + ledger.GenesisHash + `' WHERE seq = 6`,
		}, 6, "hash"},
		{"audit record deleted", []string{
			`DROP TRIGGER audit_log_no_delete`,
			`DELETE FROM audit_log WHERE seq = 3`,
		}, 3, "gap"},
		{"ledger amount rewritten", []string{
			`DROP TRIGGER ledger_no_update`,
			`UPDATE ledger SET amount = '0.001' WHERE idempotency_key = 'k7'`,
		}, 7, "differs"},
		{"ledger row deleted", []string{
			`DROP TRIGGER ledger_no_delete`,
			`DELETE FROM ledger WHERE idempotency_key = 'k2'`,
		}, 2, "missing"},
		{"ledger row inserted behind the chain's back", []string{
			`INSERT INTO ledger (id, tenant, idempotency_key, owner, payer, amount, amount_atomic, asset, network, pay_to, tx_hash, status, request_id, resource, time_us)
			 VALUES ('00000000-0000-0000-0000-00000000beef', 'acme', 'forged', '', '', '5', '5000000', '', '', '', '', 'settled', '', '', 1)`,
		}, 11, "ledger entries"},
		{"chain tail cut off", []string{
			`DROP TRIGGER audit_log_no_delete`,
			`DELETE FROM audit_log WHERE seq >= 9`,
		}, 9, "ledger entries"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "tamper.db")
			s, err := sqlite.New(openDB(t, path))
			require.NoError(t, err)
			l, err := ledger.New(s, ledger.Config{VerifyPage: 4})
			require.NoError(t, err)
			for i := 1; i <= 10; i++ {
				if i%5 == 0 {
					_, err = l.Audit(ctx, ledger.KindDirectorySwap, "", fmt.Sprint(i), map[string]int{"version": i})
				} else {
					_, _, err = l.RecordSettlement(ctx, ledger.Entry{
						Tenant: "acme", IdempotencyKey: fmt.Sprintf("k%d", i), Amount: "0.01", AmountAtomic: "10000", Status: ledger.StatusSettled,
					})
				}
				require.NoError(t, err)
			}
			n, err := l.Verify(ctx)
			require.NoError(t, err)
			require.Equal(t, int64(10), n)

			// The attacker works on the file through a handle of their own.
			raw := openDB(t, path)
			for _, stmt := range tc.sql {
				_, err := raw.Exec(stmt)
				require.NoError(t, err, stmt)
			}
			_, err = l.Verify(ctx)
			require.ErrorIs(t, err, ledger.ErrChainBroken)
			var ce *ledger.ChainError
			require.ErrorAs(t, err, &ce)
			require.Equal(t, tc.wantSeq, ce.Seq, err.Error())
			require.Contains(t, ce.Reason, tc.reason)
		})
	}
}

func TestKVExpiryFollowsInjectedClock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	s, err := sqlite.NewWithConfig(openDB(t, filepath.Join(t.TempDir(), "c.db")), sqlite.Config{Now: clock})
	require.NoError(t, err)

	require.NoError(t, s.Set(ctx, "v", []byte("x"), time.Minute))
	_, _, err = s.Incr(ctx, "c", kv.Increment{Delta: 2, Max: kv.Unbounded, TTL: time.Minute})
	require.NoError(t, err)
	_, _, err = s.Incr(ctx, "c", kv.Increment{Delta: 1, Max: kv.Unbounded}) // TTL 0 keeps the expiry
	require.NoError(t, err)
	require.NoError(t, s.Set(ctx, "forever", nil, 0))

	advance(time.Minute - time.Nanosecond)
	v, err := s.Get(ctx, "c")
	require.NoError(t, err)
	require.Equal(t, "3", string(v))
	v, err = s.Get(ctx, "forever")
	require.NoError(t, err)
	require.Equal(t, []byte{}, v, "an empty value is not a missing one")

	advance(time.Nanosecond)
	_, err = s.Get(ctx, "v")
	require.ErrorIs(t, err, kv.ErrNotFound)
	_, err = s.Get(ctx, "c")
	require.ErrorIs(t, err, kv.ErrNotFound)
	// A TTL-less increment on an expired counter starts a counter that never expires.
	n, ok, err := s.Incr(ctx, "c", kv.Increment{Delta: 1, Max: 1})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(1), n)

	swept, err := s.SweepExpired(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), swept, "only the expired value row is swept")
	advance(24 * time.Hour)
	v, err = s.Get(ctx, "c")
	require.NoError(t, err)
	require.Equal(t, "1", string(v))
}

func TestKVContextCancelled(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := s.Incr(ctx, "c", kv.Increment{Delta: 1, Max: 1})
	require.ErrorIs(t, err, context.Canceled)
	// The store is still usable afterwards.
	n, ok, err := s.Incr(context.Background(), "c", kv.Increment{Delta: 1, Max: 1})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(1), n)
}
