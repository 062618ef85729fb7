// Package ledgertest is the conformance suite of the ledger.Store port.
// Every adapter runs it against a fresh, empty store per subtest:
//
//	func TestLedgerConformance(t *testing.T) {
//		ledgertest.Run(t, func(t *testing.T) ledger.Store { return memory.NewLedger() })
//	}
//
// It checks sentinel errors, ordering, byte-exact round trips, that the
// chain the store builds verifies, and, with many goroutines and exact
// counts, that concurrent appends never fork, gap or duplicate. Run it
// under -race.
package ledgertest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/ledger"
)

// NewStore returns a fresh, empty store for one subtest.
type NewStore func(t *testing.T) ledger.Store

// Run runs the whole conformance suite.
func Run(t *testing.T, newStore NewStore) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s ledger.Store)
	}{
		{"AppendAndGet", testAppendAndGet},
		{"Duplicate", testDuplicate},
		{"NotFound", testNotFound},
		{"ListEntries", testListEntries},
		{"ListAudit", testListAudit},
		{"AuditAloneAndByteExactData", testAuditAlone},
		{"ChainVerifies", testChainVerifies},
		{"ChannelEntries", testChannelEntries},
		{"ConcurrentAppends", testConcurrentAppends},
		{"ConcurrentDuplicates", testConcurrentDuplicates},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

// base is the suite's reference time: UTC, microsecond precision, as the
// ledger writes times.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

// Entry returns a fully populated entry for tenant and key at time at.
func Entry(tenant, key string, at time.Time) ledger.Entry {
	return ledger.Entry{
		ID:             uuid.New(),
		IdempotencyKey: key,
		Tenant:         tenant,
		Owner:          "user-" + tenant,
		Payer:          "0x857b06519E91e3A54538791bDbb0E22373e36b66",
		Amount:         "0.01",
		AmountAtomic:   "10000",
		Asset:          "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
		Network:        "eip155:84532",
		PayTo:          "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
		TxHash:         "0x" + fmt.Sprintf("%064x", at.UnixNano()),
		Status:         ledger.StatusSettled,
		RequestID:      uuid.NewString(),
		Resource:       "https://" + tenant + ".api.402claw.dev/v1/rows?q=é",
		Time:           at.UTC().Truncate(time.Microsecond),
	}
}

// Record returns the audit record the ledger writes with e: its data is the
// entry's canonical JSON, so the chain also passes Verify's entry check.
func Record(t testing.TB, e ledger.Entry) ledger.AuditRecord {
	data, err := ledger.CanonicalJSON(e)
	require.NoError(t, err)
	kind := ledger.KindSettlement
	switch e.Status {
	case ledger.StatusPending:
		kind = ledger.KindSettlementPending
	case ledger.StatusFailed:
		kind = ledger.KindSettlementFailed
	case ledger.StatusCharged:
		kind = ledger.KindSettlementCharged
	case ledger.StatusClaimed:
		kind = ledger.KindSettlementClaimed
	case ledger.StatusSwept:
		kind = ledger.KindSettlementSwept
	}
	return ledger.AuditRecord{Time: e.Time, Kind: kind, Tenant: e.Tenant, Subject: e.IdempotencyKey, Data: data}
}

func appendEntry(t testing.TB, s ledger.Store, e ledger.Entry) ledger.AuditRecord {
	t.Helper()
	rec, err := s.AppendSettlement(context.Background(), e, Record(t, e))
	require.NoError(t, err)
	return rec
}

func verify(t *testing.T, s ledger.Store) int64 {
	t.Helper()
	l, err := ledger.New(s, ledger.Config{VerifyPage: 7}) // a small page exercises paging
	require.NoError(t, err)
	n, err := l.Verify(context.Background())
	require.NoError(t, err)
	return n
}

func testAppendAndGet(t *testing.T, s ledger.Store) {
	ctx := context.Background()
	e := Entry("acme", "key-1", base)
	want := Record(t, e)
	rec := appendEntry(t, s, e)
	require.Equal(t, int64(1), rec.Seq)
	require.Equal(t, ledger.GenesisHash, rec.PrevHash)
	require.Equal(t, ledger.HashRecord(rec), rec.Hash)
	require.Equal(t, want.Kind, rec.Kind)
	require.Equal(t, want.Subject, rec.Subject)
	require.Equal(t, string(want.Data), string(rec.Data))
	require.True(t, want.Time.Equal(rec.Time))

	got, err := s.GetEntry(ctx, "acme", "key-1")
	require.NoError(t, err)
	require.Equal(t, e.Time, got.Time.UTC(), "time round-trips at microsecond precision")
	got.Time = got.Time.UTC()
	require.Equal(t, e, got)

	// Statuses other than settled round-trip too.
	for i, st := range []ledger.Status{ledger.StatusPending, ledger.StatusFailed} {
		e := Entry("acme", fmt.Sprintf("status-%d", i), base.Add(time.Second))
		e.Status, e.TxHash = st, ""
		rec := appendEntry(t, s, e)
		require.Equal(t, int64(2+i), rec.Seq)
		got, err := s.GetEntry(ctx, "acme", e.IdempotencyKey)
		require.NoError(t, err)
		require.Equal(t, st, got.Status)
		require.Equal(t, "", got.TxHash)
	}
}

// ChannelEntry returns a channel entry (charge or claim) of channel id at
// cumulative amount cum.
func ChannelEntry(tenant string, st ledger.Status, id string, cum uint64, at time.Time) ledger.Entry {
	e := Entry(tenant, fmt.Sprintf("%s:%s:%d", id, st, cum), at)
	e.Status, e.Channel, e.Cumulative = st, id, fmt.Sprint(cum)
	e.Amount, e.AmountAtomic = "0.0001", "100"
	if st == ledger.StatusCharged {
		e.TxHash = "" // a charge has no transaction
	}
	return e
}

// testChannelEntries: charges, claims and sweeps keep their channel fields
// and verify in the chain; entries before them encode as they always did.
func testChannelEntries(t *testing.T, s ledger.Store) {
	ctx := context.Background()
	plain := Entry("acme", "plain", base)
	appendEntry(t, s, plain)
	id := "0x" + strings.Repeat("ab", 32)
	charge := ChannelEntry("acme", ledger.StatusCharged, id, 300, base.Add(time.Second))
	claim := ChannelEntry("acme", ledger.StatusClaimed, id, 300, base.Add(2*time.Second))
	sweep := Entry("acme", "sweep-1", base.Add(3*time.Second))
	sweep.Status = ledger.StatusSwept
	for _, e := range []ledger.Entry{charge, claim, sweep} {
		rec := appendEntry(t, s, e)
		require.Equal(t, Record(t, e).Kind, rec.Kind)
		got, err := s.GetEntry(ctx, e.Tenant, e.IdempotencyKey)
		require.NoError(t, err)
		got.Time = got.Time.UTC()
		require.Equal(t, e, got)
	}
	got, err := s.GetEntry(ctx, "acme", "plain")
	require.NoError(t, err)
	require.Empty(t, got.Channel)
	data, err := ledger.CanonicalJSON(got)
	require.NoError(t, err)
	require.NotContains(t, string(data), "channel", "an entry without a channel encodes without the channel fields")
	es, err := s.ListEntries(ctx, ledger.ListEntriesParams{Tenant: "acme"})
	require.NoError(t, err)
	require.Len(t, es, 4)
	require.Equal(t, id, es[1].Channel)
	require.Equal(t, "300", es[1].Cumulative)
	require.Equal(t, int64(4), verify(t, s))
}

func testDuplicate(t *testing.T, s ledger.Store) {
	ctx := context.Background()
	first := Entry("acme", "dup", base)
	appendEntry(t, s, first)

	second := Entry("acme", "dup", base.Add(time.Minute))
	second.Amount, second.AmountAtomic = "5", "5000000"
	_, err := s.AppendSettlement(ctx, second, Record(t, second))
	require.ErrorIs(t, err, ledger.ErrDuplicate)

	got, err := s.GetEntry(ctx, "acme", "dup")
	require.NoError(t, err)
	require.Equal(t, first.ID, got.ID, "the first entry is kept")
	require.Equal(t, "0.01", got.Amount)
	entries, err := s.ListEntries(ctx, ledger.ListEntriesParams{Tenant: "acme"})
	require.NoError(t, err)
	require.Len(t, entries, 1)
	recs, err := s.ListAudit(ctx, ledger.ListAuditParams{})
	require.NoError(t, err)
	require.Len(t, recs, 1, "a duplicate writes no audit record")

	// The key is unique per tenant, not globally.
	other := Entry("globex", "dup", base)
	rec := appendEntry(t, s, other)
	require.Equal(t, int64(2), rec.Seq, "the refused append consumed no sequence number")
	require.Equal(t, int64(2), verify(t, s))
}

func testNotFound(t *testing.T, s ledger.Store) {
	ctx := context.Background()
	_, err := s.GetEntry(ctx, "acme", "missing")
	require.ErrorIs(t, err, ledger.ErrNotFound)
	appendEntry(t, s, Entry("acme", "present", base))
	_, err = s.GetEntry(ctx, "globex", "present")
	require.ErrorIs(t, err, ledger.ErrNotFound, "another tenant's key is not found")
	_, err = s.GetEntry(ctx, "acme", "Present")
	require.ErrorIs(t, err, ledger.ErrNotFound, "keys are case-sensitive")
	entries, err := s.ListEntries(ctx, ledger.ListEntriesParams{Tenant: "nobody"})
	require.NoError(t, err)
	require.Empty(t, entries)
}

func keys(es []ledger.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.IdempotencyKey
	}
	return out
}

func testListEntries(t *testing.T, s ledger.Store) {
	ctx := context.Background()
	// Appended out of time order; two share a time.
	appendEntry(t, s, Entry("acme", "a3", base.Add(3*time.Hour)))
	appendEntry(t, s, Entry("acme", "a1", base.Add(1*time.Hour)))
	appendEntry(t, s, Entry("globex", "g1", base.Add(1*time.Hour)))
	appendEntry(t, s, Entry("acme", "a2x", base.Add(2*time.Hour)))
	appendEntry(t, s, Entry("acme", "a2y", base.Add(2*time.Hour)))
	appendEntry(t, s, Entry("acme", "a0", base))

	list := func(p ledger.ListEntriesParams) []string {
		es, err := s.ListEntries(ctx, p)
		require.NoError(t, err)
		for _, e := range es {
			require.True(t, p.Match(e))
		}
		return keys(es)
	}
	require.Equal(t, []string{"a0", "a1", "a2x", "a2y", "a3"}, list(ledger.ListEntriesParams{Tenant: "acme"}))
	require.Equal(t, []string{"g1"}, list(ledger.ListEntriesParams{Tenant: "globex"}))
	require.Equal(t, []string{"a1", "a2x", "a2y"}, list(ledger.ListEntriesParams{
		Tenant: "acme", Since: base.Add(time.Hour), Until: base.Add(3 * time.Hour),
	}), "since is inclusive, until exclusive")
	require.Equal(t, []string{"a2x", "a2y", "a3"}, list(ledger.ListEntriesParams{Tenant: "acme", Since: base.Add(90 * time.Minute)}))
	require.Equal(t, []string{"a0"}, list(ledger.ListEntriesParams{Tenant: "acme", Until: base.Add(time.Microsecond)}))
	require.Equal(t, []string{"a0", "a1"}, list(ledger.ListEntriesParams{Tenant: "acme", Limit: 2}))
	require.Empty(t, list(ledger.ListEntriesParams{Tenant: "acme", Since: base.Add(4 * time.Hour)}))
	all := list(ledger.ListEntriesParams{})
	require.Len(t, all, 6, "an empty tenant lists every tenant")
	require.Equal(t, "a0", all[0])
	require.Equal(t, "a3", all[5])
	// Bounds in another time zone mean the same instants.
	cet := time.FixedZone("CET", 3600)
	require.Equal(t, []string{"a1"}, list(ledger.ListEntriesParams{
		Tenant: "acme", Since: base.Add(time.Hour).In(cet), Until: base.Add(2 * time.Hour).In(cet),
	}))
}

func testListAudit(t *testing.T, s ledger.Store) {
	ctx := context.Background()
	recs, err := s.ListAudit(ctx, ledger.ListAuditParams{})
	require.NoError(t, err)
	require.Empty(t, recs)
	var appended []ledger.AuditRecord
	for i := 0; i < 10; i++ {
		appended = append(appended, appendEntry(t, s, Entry("acme", fmt.Sprintf("k%d", i), base.Add(time.Duration(i)*time.Second))))
	}
	seqs := func(p ledger.ListAuditParams) []int64 {
		rs, err := s.ListAudit(ctx, p)
		require.NoError(t, err)
		out := make([]int64, len(rs))
		for i, r := range rs {
			out[i] = r.Seq
			require.Equal(t, appended[r.Seq-1].Hash, r.Hash)
			require.Equal(t, string(appended[r.Seq-1].Data), string(r.Data))
		}
		return out
	}
	require.Equal(t, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, seqs(ledger.ListAuditParams{}))
	require.Equal(t, []int64{4, 5, 6}, seqs(ledger.ListAuditParams{FromSeq: 4, Limit: 3}))
	require.Equal(t, []int64{9, 10}, seqs(ledger.ListAuditParams{FromSeq: 9, Limit: 5}))
	require.Equal(t, []int64{1, 2}, seqs(ledger.ListAuditParams{FromSeq: -3, Limit: 2}))
	require.Empty(t, seqs(ledger.ListAuditParams{FromSeq: 11}))
	for i := 1; i < len(appended); i++ {
		require.Equal(t, appended[i-1].Hash, appended[i].PrevHash, "record %d links to %d", i+1, i)
	}
}

func testAuditAlone(t *testing.T, s ledger.Store) {
	ctx := context.Background()
	appendEntry(t, s, Entry("acme", "k", base))
	// Data is kept byte for byte: not reformatted, numbers not rounded.
	data := []byte(`{"from":"v1","n":12345678901234567890.000001,"tenants":["acme","globex"],"z":"ü\u2028<>&"}`)
	rec, err := s.AppendAudit(ctx, ledger.AuditRecord{
		Time: base.Add(time.Second), Kind: ledger.KindDirectorySwap, Subject: "directory-v2", Data: data,
	})
	require.NoError(t, err)
	require.Equal(t, int64(2), rec.Seq)
	require.Equal(t, ledger.HashRecord(rec), rec.Hash)
	data[2] = 'X' // the store must have copied the caller's bytes
	recs, err := s.ListAudit(ctx, ledger.ListAuditParams{FromSeq: 2})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	got := recs[0]
	require.Equal(t, `{"from":"v1","n":12345678901234567890.000001,"tenants":["acme","globex"],"z":"ü\u2028<>&"}`, string(got.Data))
	require.Equal(t, ledger.KindDirectorySwap, got.Kind)
	require.Equal(t, "", got.Tenant)
	require.Equal(t, "directory-v2", got.Subject)
	require.True(t, base.Add(time.Second).Equal(got.Time))
	require.Equal(t, rec.Hash, got.Hash)
	require.Equal(t, int64(2), verify(t, s))
}

func testChainVerifies(t *testing.T, s ledger.Store) {
	ctx := context.Background()
	now := base
	l, err := ledger.New(s, ledger.Config{Now: func() time.Time { now = now.Add(time.Millisecond); return now }})
	require.NoError(t, err)
	n, err := l.Verify(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "an empty chain verifies")
	for i := 0; i < 25; i++ {
		e := ledger.Entry{
			IdempotencyKey: fmt.Sprintf("pay-%d", i), Tenant: "acme", Amount: "0.010", AmountAtomic: "10000",
			Status: ledger.StatusSettled, Payer: "0xabc",
		}
		if i%5 == 4 {
			_, err := l.Audit(ctx, ledger.KindDirectorySwap, "", fmt.Sprint(i), map[string]any{"version": i})
			require.NoError(t, err)
			continue
		}
		_, _, err := l.RecordSettlement(ctx, e)
		require.NoError(t, err)
	}
	_, _, err = l.RecordSettlement(ctx, ledger.Entry{IdempotencyKey: "pay-0", Tenant: "acme", Amount: "1", AmountAtomic: "1", Status: ledger.StatusSettled})
	require.ErrorIs(t, err, ledger.ErrDuplicate)
	n, err = l.Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(25), n)
}

// Concurrency: appenders goroutines each append perWorker settlements (every
// third one an audit record alone), and every settlement is also attempted a
// second time by another goroutine, which must get ErrDuplicate.
const (
	appenders = 64
	perWorker = 12
)

func testConcurrentAppends(t *testing.T, s ledger.Store) {
	concurrentAppends(t, []ledger.Store{s})
}

// RunReplicas runs the concurrent-append test over several stores that
// share one backend (several processes or connection pools in front of one
// database): goroutines racing for the same keys sit on different stores,
// and the one chain must still hold every record once, contiguous, and
// verify.
func RunReplicas(t *testing.T, newReplicas func(t *testing.T, n int) []ledger.Store) {
	t.Helper()
	t.Run("ConcurrentAppendsAcrossReplicas", func(t *testing.T) {
		concurrentAppends(t, newReplicas(t, 4))
	})
}

func concurrentAppends(t *testing.T, stores []ledger.Store) {
	ctx := context.Background()
	s := stores[0]
	var (
		wg              sync.WaitGroup
		ok, dup, audits atomic.Int64
		errs            = make(chan error, 2*appenders)
	)
	for w := 0; w < appenders; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[w%len(stores)] // workers w and w^1 race on different stores
			for i := 0; i < perWorker; i++ {
				if i%3 == 2 {
					_, err := s.AppendAudit(ctx, ledger.AuditRecord{
						Time: base, Kind: "test_event", Subject: fmt.Sprintf("w%d-%d", w, i), Data: []byte(`{}`),
					})
					if err != nil {
						errs <- err
						return
					}
					audits.Add(1)
					continue
				}
				// Worker w and worker w^1 race for the same keys.
				e := Entry(fmt.Sprintf("t%d", (w/2)%4), fmt.Sprintf("pair%d-%d", w/2, i), base.Add(time.Duration(i)*time.Second))
				_, err := s.AppendSettlement(ctx, e, Record(t, e))
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, ledger.ErrDuplicate):
					dup.Add(1)
				default:
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	settlementsPerWorker := int64(perWorker - perWorker/3)
	wantEntries := appenders / 2 * settlementsPerWorker
	require.Equal(t, wantEntries, ok.Load(), "each key is stored exactly once")
	require.Equal(t, wantEntries, dup.Load(), "every second attempt is a duplicate")
	require.Equal(t, int64(appenders*perWorker/3), audits.Load())

	entries, err := s.ListEntries(ctx, ledger.ListEntriesParams{})
	require.NoError(t, err)
	require.Len(t, entries, int(wantEntries))
	seen := map[string]bool{}
	for _, e := range entries {
		k := e.Tenant + "/" + e.IdempotencyKey
		require.False(t, seen[k], "entry %s stored twice", k)
		seen[k] = true
	}
	total := wantEntries + audits.Load()
	recs, err := s.ListAudit(ctx, ledger.ListAuditParams{})
	require.NoError(t, err)
	require.Len(t, recs, int(total))
	for i, r := range recs {
		require.Equal(t, int64(i+1), r.Seq, "sequence numbers are contiguous")
	}
	require.Equal(t, total, verify(t, s))
}

func testConcurrentDuplicates(t *testing.T, s ledger.Store) {
	ctx := context.Background()
	e := Entry("acme", "contested", base)
	var wg sync.WaitGroup
	var ok, dup atomic.Int64
	errs := make(chan error, appenders)
	for w := 0; w < appenders; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := e
			mine.ID = uuid.New()
			_, err := s.AppendSettlement(ctx, mine, Record(t, mine))
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ledger.ErrDuplicate):
				dup.Add(1)
			default:
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, int64(1), ok.Load())
	require.Equal(t, int64(appenders-1), dup.Load())
	require.Equal(t, int64(1), verify(t, s))
}

// Benchmark measures settlement appends (entry and audit record in one
// atomic step) serially and from 8*GOMAXPROCS concurrent goroutines, and
// audit appends. It reports settlements/s.
func Benchmark(b *testing.B, newStore func(b *testing.B) ledger.Store) {
	b.Run("AppendSettlement", func(b *testing.B) {
		s := newStore(b)
		benchSettle(b, s, "serial", func(body func(i int64)) {
			for i := 0; i < b.N; i++ {
				body(int64(i))
			}
		})
	})
	b.Run("AppendSettlementParallel", func(b *testing.B) {
		s := newStore(b)
		var next atomic.Int64
		b.SetParallelism(8) // 8 writers per CPU: contention, not just parallelism
		benchSettle(b, s, "parallel", func(body func(i int64)) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					body(next.Add(1))
				}
			})
		})
	})
	b.Run("AppendAudit", func(b *testing.B) {
		s := newStore(b)
		ctx := context.Background()
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := s.AppendAudit(ctx, ledger.AuditRecord{Time: base, Kind: "bench", Data: []byte(`{"i":1}`)}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func benchSettle(b *testing.B, s ledger.Store, prefix string, loop func(body func(i int64))) {
	ctx := context.Background()
	tmpl := Entry("bench", "", base)
	data, err := ledger.CanonicalJSON(tmpl)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	loop(func(i int64) {
		e := tmpl
		e.ID = uuid.New()
		e.IdempotencyKey = fmt.Sprintf("%s-%d", prefix, i)
		rec := ledger.AuditRecord{Time: base, Kind: ledger.KindSettlement, Tenant: e.Tenant, Subject: e.IdempotencyKey, Data: data}
		if _, err := s.AppendSettlement(ctx, e, rec); err != nil {
			b.Error(err)
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "settlements/s")
}
