package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/postgres"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ledger/ledgertest"
)

func TestLedgerConformance(t *testing.T) {
	t.Parallel()
	ledgertest.Run(t, func(t *testing.T) ledger.Store {
		s, _, _ := newStore(t)
		return s
	})
}

func BenchmarkLedger(b *testing.B) {
	ledgertest.Benchmark(b, func(b *testing.B) ledger.Store {
		s, _, _ := newStore(b)
		return s
	})
}

// TestLedgerReplicas: four replicas (four pools over one schema) append at
// once, racing for the same idempotency keys across replicas.
func TestLedgerReplicas(t *testing.T) {
	t.Parallel()
	ledgertest.RunReplicas(t, func(t *testing.T, n int) []ledger.Store {
		stores := replicas(t, n)
		out := make([]ledger.Store, len(stores))
		for i, s := range stores {
			out[i] = s
		}
		return out
	})
}

// oneSettlement returns a Store on a fresh schema holding one settlement,
// with its pool, the schema and that settlement's audit record.
func oneSettlement(t *testing.T) (*postgres.Store, *pgxpool.Pool, string, ledger.AuditRecord) {
	t.Helper()
	s, pool, schema := newStore(t)
	e := ledgertest.Entry("acme", "k1", time.Now())
	first, err := s.AppendSettlement(context.Background(), e, ledgertest.Record(t, e))
	require.NoError(t, err)
	return s, pool, schema, first
}

// TestLedgerAppendOnly: the database itself refuses UPDATE, DELETE and
// TRUNCATE of the ledger and the audit log, and an insert that would gap or
// fork the chain.
func TestLedgerAppendOnly(t *testing.T) {
	t.Parallel()
	s, pool, schema, _ := oneSettlement(t)
	ctx := context.Background()
	led := pgx.Identifier{schema, "ledger"}.Sanitize()
	audit := pgx.Identifier{schema, "audit_log"}.Sanitize()
	for _, stmt := range []string{
		"UPDATE " + led + " SET amount = '100'",
		"DELETE FROM " + led,
		"TRUNCATE " + led + " CASCADE",
		"UPDATE " + audit + " SET data = '{}'",
		"DELETE FROM " + audit + " WHERE seq = 1",
		"TRUNCATE " + audit,
	} {
		_, err := pool.Exec(ctx, stmt)
		require.Error(t, err, stmt)
		require.True(t, postgres.IsAppendOnlyViolation(err), "%s: %v", stmt, err)
		require.ErrorContains(t, err, "append-only")
	}
	var seq int64
	var hash string
	require.NoError(t, pool.QueryRow(ctx, "SELECT seq, hash FROM "+audit).Scan(&seq, &hash))
	insert := "INSERT INTO " + audit + " (seq, time, kind, tenant, subject, data, prev_hash, hash) VALUES ($1, now(), 'x', '', '', '\\x7b7d', $2, $2)"
	_, err := pool.Exec(ctx, insert, 3, hash)
	require.ErrorContains(t, err, "gap or a fork", "a gap is refused")
	_, err = pool.Exec(ctx, insert, 2, ledger.GenesisHash)
	require.ErrorContains(t, err, "gap or a fork", "a fork (wrong prev hash) is refused")
	got, err := s.GetEntry(ctx, "acme", "k1")
	require.NoError(t, err)
	require.Equal(t, "0.01", got.Amount)
	l, _ := ledger.New(s, ledger.Config{})
	n, err := l.Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
}

// TestLedgerLinkCheckedPerStatement: the gap-or-fork check runs once per
// statement over all of its rows, so a statement inserting several
// records is refused when any of them does not follow the record before
// it, whether that one is already stored or another row of the statement.
func TestLedgerLinkCheckedPerStatement(t *testing.T) {
	t.Parallel()
	_, pool, schema, first := oneSettlement(t)
	ctx := context.Background()
	audit := pgx.Identifier{schema, "audit_log"}.Sanitize()
	h := func(c byte) string { return strings.Repeat(string(c), 64) }
	insert := func(rows ...[3]any) error {
		var vals []string
		var args []any
		for i, r := range rows {
			vals = append(vals, fmt.Sprintf("($%d, now(), 'x', '', '', '\\x7b7d', $%d, $%d)", 3*i+1, 3*i+2, 3*i+3))
			args = append(args, r[:]...)
		}
		_, err := pool.Exec(ctx, "INSERT INTO "+audit+" (seq, time, kind, tenant, subject, data, prev_hash, hash) VALUES "+strings.Join(vals, ", "), args...)
		return err
	}
	for name, rows := range map[string][][3]any{
		"the second row forks":              {{2, first.Hash, h('a')}, {3, h('f'), h('b')}},
		"the second row leaves a gap":       {{2, first.Hash, h('a')}, {4, h('a'), h('b')}},
		"the first row forks":               {{2, h('f'), h('a')}, {3, h('a'), h('b')}},
		"a row names the genesis hash late": {{2, ledger.GenesisHash, h('a')}},
	} {
		err := insert(rows...)
		require.ErrorContains(t, err, "gap or a fork", name)
	}
	var n int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+audit).Scan(&n))
	require.Equal(t, 1, n, "a refused statement writes none of its rows")
	// Rows that link, to the tail and to each other, are taken.
	require.NoError(t, insert([3]any{2, first.Hash, h('a')}, [3]any{3, h('a'), h('b')}))
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+audit).Scan(&n))
	require.Equal(t, 3, n)
}

// TestLedgerHashesAreHex: the database refuses an audit record whose hash
// or prev hash is not 64 lowercase hex digits.
func TestLedgerHashesAreHex(t *testing.T) {
	t.Parallel()
	_, pool, schema, first := oneSettlement(t)
	ctx := context.Background()
	audit := pgx.Identifier{schema, "audit_log"}.Sanitize()
	insert := "INSERT INTO " + audit + " (seq, time, kind, tenant, subject, data, prev_hash, hash) VALUES (2, now(), 'x', '', '', '\\x7b7d', $1, $2)"
	good := strings.Repeat("0a", 32)
	for _, bad := range []string{
		strings.Repeat("A", 64),       // uppercase
		strings.Repeat("a", 63),       // short
		strings.Repeat("a", 65),       // long
		strings.Repeat("a", 63) + "g", // not hex
		strings.Repeat("a", 62) + "é", // 64 bytes, not hex
		strings.Repeat("a", 63) + " ", // space
	} {
		// Refused by the column's check: its name, or the error decode
		// raises for a byte that is not a hex digit.
		_, err := pool.Exec(ctx, insert, first.Hash, bad)
		require.Error(t, err, "hash %q", bad)
		require.Regexp(t, `audit_log_hash_check|invalid hexadecimal`, err.Error(), "hash %q", bad)
		_, err = pool.Exec(ctx, insert, bad, good)
		require.Error(t, err, "prev hash %q", bad)
		require.Regexp(t, `audit_log_prev_hash_check|invalid hexadecimal`, err.Error(), "prev hash %q", bad)
	}
	_, err := pool.Exec(ctx, insert, first.Hash, good)
	require.NoError(t, err, "64 lowercase hex digits that follow the tail")
}

// TestLedgerConnectionCutMidAppend: appends race with a proxy that drops
// every connection now and then. Each append either fully happened (entry
// and audit record) or not at all, and the chain verifies.
func TestLedgerConnectionCutMidAppend(t *testing.T) {
	t.Parallel()
	_, _, schema := newStore(t)
	p := startTCPProxy(t, pgAddr(t))
	pool := proxiedPool(t, p.addr(), 8)
	s, err := postgres.New(context.Background(), pool, postgres.Config{Schema: schema})
	require.NoError(t, err)
	ctx := context.Background()

	stop := make(chan struct{})
	var cutter sync.WaitGroup
	cutter.Add(1)
	go func() {
		defer cutter.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(40 * time.Millisecond):
				p.dropConnections()
			}
		}
	}()
	var wg sync.WaitGroup
	var succeeded, failed atomic.Int64
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				e := ledgertest.Entry("acme", fmt.Sprintf("w%d-%d", w, i), time.Now())
				c, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := s.AppendSettlement(c, e, ledgertest.Record(t, e))
				cancel()
				if err != nil {
					failed.Add(1)
				} else {
					succeeded.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	cutter.Wait()
	t.Logf("appends: %d succeeded, %d failed on a cut connection", succeeded.Load(), failed.Load())
	require.Positive(t, failed.Load(), "the proxy should have cut some appends")

	// Read through an uncut pool: entries and audit records match one to one.
	// A group whose connection was cut after its batch reached the
	// server (lock, statement and COMMIT travel together) may still
	// commit after its caller gave up: read once the counts are steady.
	direct, err := postgres.New(ctx, newPool(t, 2), postgres.Config{Schema: schema})
	require.NoError(t, err)
	var (
		entries []ledger.Entry
		recs    []ledger.AuditRecord
	)
	for prev := -1; ; time.Sleep(200 * time.Millisecond) {
		entries, err = direct.ListEntries(ctx, ledger.ListEntriesParams{})
		require.NoError(t, err)
		recs, err = direct.ListAudit(ctx, ledger.ListAuditParams{})
		require.NoError(t, err)
		if len(recs) == prev {
			break
		}
		prev = len(recs)
	}
	require.Len(t, recs, len(entries), "no entry without its audit record and no record without its entry")
	require.GreaterOrEqual(t, int64(len(entries)), succeeded.Load(), "every reported success is stored")
	l, _ := ledger.New(direct, ledger.Config{})
	n, err := l.Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(len(recs)), n)
}

// Records are sealed by the server, whose time format matches
// ledger.HashRecord's for years 1 to 9999: a record outside them is refused
// and nothing is written, so the chain stays verifiable.
func TestLedgerRefusesUnsealableTimes(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	ctx := context.Background()
	_, err := s.AppendAudit(ctx, ledger.AuditRecord{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), Kind: "test_event", Data: []byte(`{}`)})
	require.ErrorIs(t, err, ledger.ErrInvalid)
	e := ledgertest.Entry("acme", "far", time.Now())
	rec := ledgertest.Record(t, e)
	rec.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	_, err = s.AppendSettlement(ctx, e, rec)
	require.ErrorIs(t, err, ledger.ErrInvalid)
	_, err = s.GetEntry(ctx, "acme", "far")
	require.ErrorIs(t, err, ledger.ErrNotFound)
	rec, err = s.AppendAudit(ctx, ledger.AuditRecord{Time: time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC), Kind: "test_event", Data: []byte(`{}`)})
	require.NoError(t, err)
	require.EqualValues(t, 1, rec.Seq)
	l, err := ledger.New(s, ledger.Config{})
	require.NoError(t, err)
	n, err := l.Verify(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}

// BenchmarkLedgerReplicas is the settlement rate through ledger.Ledger
// with 32 concurrent writers per replica, one or two replicas (pools over
// one schema), the chain's advisory lock being what they share. Each
// replica groups the appends that queue while it writes (chain.go), so a
// second replica's group is formed and waiting for the lock while the
// first commits: two replicas exceed one instead of serialising on the
// lock append by append. DESIGN section 18.
//
//	TEST_DATABASE_URL=... go test -run '^$' -bench LedgerReplicas -benchtime 4000x -count 3 ./adapters/postgres/
func BenchmarkLedgerReplicas(b *testing.B) {
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			first, _, schema := newStore(b)
			ledgers := make([]*ledger.Ledger, n)
			stores := make([]*postgres.Store, n)
			for i := range ledgers {
				s := first
				if i > 0 {
					var err error
					s, err = postgres.New(context.Background(), newPool(b, 4), postgres.Config{Schema: schema})
					require.NoError(b, err)
				}
				l, err := ledger.New(s, ledger.Config{})
				require.NoError(b, err)
				ledgers[i], stores[i] = l, s
			}
			ctx := context.Background()
			var next, worker atomic.Int64
			// Each replica brings its own 32 writers, as each gateway
			// serves its share of the connections.
			b.SetParallelism(max(1, 32*n/runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			busy0, total0 := machineCPU()
			b.RunParallel(func(pb *testing.PB) {
				l := ledgers[int(worker.Add(1))%n]
				for pb.Next() {
					_, _, err := l.RecordSettlement(ctx, ledger.Entry{
						Tenant: "bench", IdempotencyKey: fmt.Sprint(next.Add(1)), Amount: "0.01", AmountAtomic: "10000",
						Status: ledger.StatusSettled,
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			busy1, total1 := machineCPU()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "settlements/s")
			// Why the rate is what it is: how much of the run the chain's
			// lock was held (by any replica; near 100% means the lock is
			// the bottleneck), how long one group held it and how many
			// appends a group carried, and how busy the machine's CPUs
			// were (PostgreSQL, the replicas and whatever else runs).
			var groups, appends int64
			var held time.Duration
			for _, s := range stores {
				g, a, h := postgres.ChainStats(s)
				groups, appends, held = groups+g, appends+a, held+h
			}
			if groups > 0 {
				b.ReportMetric(100*held.Seconds()/b.Elapsed().Seconds(), "lock-held-%")
				b.ReportMetric(float64(held.Microseconds())/float64(groups), "held-us/group")
				b.ReportMetric(float64(appends)/float64(groups), "appends/group")
			}
			if total1 > total0 {
				b.ReportMetric(100*float64(busy1-busy0)/float64(total1-total0), "machine-cpu-%")
			}
		})
	}
}

// machineCPU returns the busy and total CPU time of the whole machine so
// far, in clock ticks, from /proc/stat (zeros where it cannot be read).
func machineCPU() (busy, total int64) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle and iowait
			busy += n
		}
	}
	return busy, total
}

// TestLedgerGroupsInsertInKeyOrder: entries are inserted before the chain's
// lock, so two replicas' groups holding the same keys must insert them in
// one order, or each would wait on an index entry the other holds. Each
// replica's group is made here of the same 100 keys, queued in opposite
// orders, and both groups stop at a key an outside transaction holds;
// once it lets go, both go through without a deadlock (the replicas'
// sessions wait 30 s before PostgreSQL looks for one, so a deadlock stalls
// the test; without the order it took 15 s).
func TestLedgerGroupsInsertInKeyOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, _, schema := newStore(t)
	var rs [2]*postgres.Store
	for i := range rs {
		cfg, err := pgxpool.ParseConfig(databaseURL(t))
		require.NoError(t, err)
		cfg.MaxConns = 4
		cfg.ConnConfig.RuntimeParams["deadlock_timeout"] = "30s"
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		rs[i], err = postgres.New(ctx, pool, postgres.Config{Schema: schema})
		require.NoError(t, err)
	}
	pool := newPool(t, 2)
	led := pgx.Identifier{schema, "ledger"}.Sanitize()
	hold := func(keys ...string) pgx.Tx {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		for _, key := range keys {
			e := ledgertest.Entry("acme", key, time.Now())
			_, err = tx.Exec(ctx, "INSERT INTO "+led+` (id, tenant, idempotency_key, owner, payer, amount, amount_atomic, asset,
				network, pay_to, tx_hash, status, request_id, resource, time) VALUES ($1, 'acme', $2, '', '', '', '', '', '', '', '', 'settled', '', '', now())`, e.ID, key)
			require.NoError(t, err)
		}
		return tx
	}
	const n = 100
	var wg sync.WaitGroup
	results := make(chan error, 2*(n+2))
	appendKey := func(r *postgres.Store, key string) {
		wg.Go(func() {
			e := ledgertest.Entry("acme", key, time.Now())
			_, err := r.AppendSettlement(ctx, e, ledgertest.Record(t, e))
			results <- err
		})
	}
	// Each replica's first append waits on a held lead key, and its next
	// group, the 100 keys, queues behind it. Once the lead keys are let go
	// both groups insert until they reach "k-050", which is held too: in
	// opposite orders, each would then hold half the keys the other one
	// still has to insert.
	leads, middle := hold("a-0", "a-1"), hold("k-050")
	appendKey(rs[0], "a-0")
	appendKey(rs[1], "a-1")
	time.Sleep(200 * time.Millisecond)
	for i := range n {
		appendKey(rs[0], fmt.Sprintf("k-%03d", i))
		appendKey(rs[1], fmt.Sprintf("k-%03d", n-1-i))
		time.Sleep(time.Millisecond) // they queue in this order
	}
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, leads.Rollback(ctx))
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	require.NoError(t, middle.Rollback(ctx))
	wg.Wait()
	close(results)
	require.Less(t, time.Since(start), 10*time.Second, "the groups waited on each other")
	ok, dup := 0, 0
	for err := range results {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ledger.ErrDuplicate):
			dup++
		default:
			t.Fatalf("append: %v", err)
		}
	}
	require.Equal(t, n+2, ok, "each key settled once")
	require.Equal(t, n, dup, "and refused once")
}
