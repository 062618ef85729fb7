package ledger_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/ledger"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// clock is an injected clock that moves one millisecond per reading.
func clock() func() time.Time {
	now := t0
	return func() time.Time { now = now.Add(time.Millisecond); return now }
}

func newLedger(t *testing.T, s ledger.Store) *ledger.Ledger {
	t.Helper()
	l, err := ledger.New(s, ledger.Config{Now: clock()})
	require.NoError(t, err)
	return l
}

func settled(key string) ledger.Entry {
	return ledger.Entry{
		IdempotencyKey: key, Tenant: "acme", Owner: "u1", Payer: "0xpayer", Amount: "0.01",
		AmountAtomic: "10000", Asset: "0xasset", Network: "eip155:84532", PayTo: "0xpayto",
		TxHash: "0xtx", Status: ledger.StatusSettled, RequestID: "r1", Resource: "https://acme/x",
	}
}

func TestNewRejectsNilStore(t *testing.T) {
	_, err := ledger.New(nil, ledger.Config{})
	require.Error(t, err)
}

func TestRecordSettlementFillsAndNormalises(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	id := uuid.MustParse("6f1c8a4e-0b6d-4c1e-9d55-3f1f3c2a9b10")
	l, err := ledger.New(memory.NewLedger(), ledger.Config{
		Now:   func() time.Time { return time.Date(2025, 6, 1, 14, 0, 0, 123456789, time.FixedZone("CEST", 7200)) },
		NewID: func() uuid.UUID { return id },
	})
	require.NoError(t, err)
	e := settled("k1")
	e.Amount, e.AmountAtomic = "0.0100", "0010000"
	got, rec, err := l.RecordSettlement(ctx, e)
	require.NoError(t, err)
	require.Equal(t, id, got.ID)
	require.Equal(t, "0.01", got.Amount)
	require.Equal(t, "10000", got.AmountAtomic)
	require.Equal(t, time.Date(2025, 6, 1, 12, 0, 0, 123456000, time.UTC), got.Time, "UTC, microseconds")
	require.Equal(t, int64(1), rec.Seq)
	require.Equal(t, ledger.KindSettlement, rec.Kind)
	require.Equal(t, "k1", rec.Subject)
	require.Equal(t, "acme", rec.Tenant)
	want, err := ledger.CanonicalJSON(got)
	require.NoError(t, err)
	require.Equal(t, string(want), string(rec.Data))

	stored, err := l.Entry(ctx, "acme", "k1")
	require.NoError(t, err)
	require.Equal(t, got, stored)

	// A caller-supplied id and time are kept.
	e2 := settled("k2")
	e2.ID = uuid.New()
	e2.Time = t0
	got2, _, err := l.RecordSettlement(ctx, e2)
	require.NoError(t, err)
	require.Equal(t, e2.ID, got2.ID)
	require.Equal(t, t0, got2.Time)
}

func TestRecordSettlementKinds(t *testing.T) {
	t.Parallel()
	l := newLedger(t, memory.NewLedger())
	for status, kind := range map[ledger.Status]string{
		ledger.StatusSettled: ledger.KindSettlement,
		ledger.StatusPending: ledger.KindSettlementPending,
		ledger.StatusFailed:  ledger.KindSettlementFailed,
		ledger.StatusCharged: ledger.KindSettlementCharged,
		ledger.StatusClaimed: ledger.KindSettlementClaimed,
		ledger.StatusSwept:   ledger.KindSettlementSwept,
	} {
		e := settled("k-" + string(status))
		e.Status = status
		if status == ledger.StatusCharged || status == ledger.StatusClaimed {
			e.Channel, e.Cumulative = testChannel, "0100"
		}
		_, rec, err := l.RecordSettlement(context.Background(), e)
		require.NoError(t, err)
		require.Equal(t, kind, rec.Kind)
		require.True(t, ledger.IsSettlementKind(rec.Kind))
	}
}

const testChannel = "0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

// TestRevenueStatuses: charges count as revenue, claims and sweeps move
// money already counted.
func TestRevenueStatuses(t *testing.T) {
	for s, want := range map[ledger.Status]bool{
		ledger.StatusSettled: true, ledger.StatusCharged: true,
		ledger.StatusPending: false, ledger.StatusFailed: false, ledger.StatusClaimed: false, ledger.StatusSwept: false,
	} {
		require.Equal(t, want, s.Revenue(), s)
		require.Equal(t, s == ledger.StatusCharged || s == ledger.StatusClaimed || s == ledger.StatusSwept, s.IsChannel(), s)
	}
}

func TestRecordSettlementValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(e *ledger.Entry)
		field  string
	}{
		{"no tenant", func(e *ledger.Entry) { e.Tenant = "" }, "tenant"},
		{"no key", func(e *ledger.Entry) { e.IdempotencyKey = "" }, "idempotency key"},
		{"long key", func(e *ledger.Entry) { e.IdempotencyKey = strings.Repeat("k", ledger.MaxKeyLen+1) }, "idempotency key"},
		{"bad status", func(e *ledger.Entry) { e.Status = "done" }, "status"},
		{"no status", func(e *ledger.Entry) { e.Status = "" }, "status"},
		{"negative amount", func(e *ledger.Entry) { e.Amount = "-0.01" }, "amount"},
		{"amount not a number", func(e *ledger.Entry) { e.Amount = "ten" }, "amount"},
		{"empty amount", func(e *ledger.Entry) { e.Amount = "" }, "amount"},
		{"atomic with a fraction", func(e *ledger.Entry) { e.AmountAtomic = "10.5" }, "atomic amount"},
		{"atomic negative", func(e *ledger.Entry) { e.AmountAtomic = "-1" }, "atomic amount"},
		{"atomic empty", func(e *ledger.Entry) { e.AmountAtomic = "" }, "atomic amount"},
		{"settled with a channel", func(e *ledger.Entry) { e.Channel = testChannel }, "no channel"},
		{"settled with a cumulative", func(e *ledger.Entry) { e.Cumulative = "1" }, "no channel"},
		{"charge without a channel", func(e *ledger.Entry) { e.Status, e.Cumulative = ledger.StatusCharged, "1" }, "channel id"},
		{"charge with an upper-case channel", func(e *ledger.Entry) {
			e.Status, e.Channel, e.Cumulative = ledger.StatusCharged, strings.ToUpper(testChannel), "1"
		}, "channel id"},
		{"claim with a short channel", func(e *ledger.Entry) {
			e.Status, e.Channel, e.Cumulative = ledger.StatusClaimed, testChannel[:65], "1"
		}, "channel id"},
		{"charge without a cumulative", func(e *ledger.Entry) { e.Status, e.Channel = ledger.StatusCharged, testChannel }, "cumulative"},
		{"charge with a negative cumulative", func(e *ledger.Entry) {
			e.Status, e.Channel, e.Cumulative = ledger.StatusCharged, testChannel, "-5"
		}, "cumulative"},
		{"sweep with a channel", func(e *ledger.Entry) { e.Status, e.Channel = ledger.StatusSwept, testChannel }, "no channel"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := memory.NewLedger()
			l := newLedger(t, s)
			e := settled("k")
			tc.mutate(&e)
			_, _, err := l.RecordSettlement(context.Background(), e)
			require.ErrorIs(t, err, ledger.ErrInvalid)
			require.Contains(t, err.Error(), tc.field)
			recs, err := s.ListAudit(context.Background(), ledger.ListAuditParams{})
			require.NoError(t, err)
			require.Empty(t, recs, "nothing written")
		})
	}
}

func TestRecordSettlementDuplicateReturnsFirst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newLedger(t, memory.NewLedger())
	first, _, err := l.RecordSettlement(ctx, settled("k"))
	require.NoError(t, err)
	again := settled("k")
	again.Amount, again.AmountAtomic = "9", "9000000"
	got, rec, err := l.RecordSettlement(ctx, again)
	require.ErrorIs(t, err, ledger.ErrDuplicate)
	require.Equal(t, first, got, "the existing entry comes back for replay")
	require.Zero(t, rec.Seq)
	n, err := l.Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
}

func TestEntryNotFound(t *testing.T) {
	t.Parallel()
	l := newLedger(t, memory.NewLedger())
	_, err := l.Entry(context.Background(), "acme", "nope")
	require.ErrorIs(t, err, ledger.ErrNotFound)
}

func TestAudit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newLedger(t, memory.NewLedger())
	rec, err := l.Audit(ctx, ledger.KindDirectorySwap, "", "v2", map[string]any{"z": 1, "a": []string{"x"}, "html": "<&>"})
	require.NoError(t, err)
	require.Equal(t, `{"a":["x"],"html":"<&>","z":1}`, string(rec.Data))
	require.Equal(t, int64(1), rec.Seq)
	rec, err = l.Audit(ctx, "tenant.plan_changed", "acme", "", json.RawMessage(" { \"b\" : 2.50 , \"a\" : null } "))
	require.NoError(t, err)
	require.Equal(t, `{"a":null,"b":2.50}`, string(rec.Data))
	rec, err = l.Audit(ctx, "note", "", "", nil)
	require.NoError(t, err)
	require.Equal(t, `null`, string(rec.Data))

	for _, bad := range []string{"", "Directory_Swap", "has space", strings.Repeat("k", 65), ledger.KindSettlement, ledger.KindSettlementFailed, ledger.KindSettlementPending} {
		_, err := l.Audit(ctx, bad, "", "", nil)
		require.ErrorIs(t, err, ledger.ErrInvalid, "kind %q", bad)
	}
	_, err = l.Audit(ctx, "note", "", "", json.RawMessage(`{"a":`))
	require.ErrorIs(t, err, ledger.ErrInvalid)
	_, err = l.Audit(ctx, "note", strings.Repeat("t", ledger.MaxKeyLen+1), "", nil)
	require.ErrorIs(t, err, ledger.ErrInvalid)

	log, err := l.AuditLog(ctx, ledger.ListAuditParams{})
	require.NoError(t, err)
	require.Len(t, log, 3)
	n, err := l.Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(3), n)
}

func TestCanonicalJSON(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{json.RawMessage(`{"b":1,"a":{"d":[3,2,1],"c":true}}`), `{"a":{"c":true,"d":[3,2,1]},"b":1}`},
		{json.RawMessage("\n[ 1 , 2.0 , 1e3 , -0 ]\t"), `[1,2.0,1e3,-0]`},
		{json.RawMessage(`{"n":123456789012345678901234567890}`), `{"n":123456789012345678901234567890}`},
		{json.RawMessage(`"\u00e9<>&"`), `"é<>&"`},
		{[]byte(`{"é":1,"e":2,"z":3,"A":4}`), `{"A":4,"e":2,"z":3,"é":1}`},
		{map[string]int{"b": 2, "a": 1}, `{"a":1,"b":2}`},
		{struct {
			Z string `json:"z"`
			A int    `json:"a"`
		}{"x", 1}, `{"a":1,"z":"x"}`},
		{nil, `null`},
	}
	for _, tc := range tests {
		got, err := ledger.CanonicalJSON(tc.in)
		require.NoError(t, err)
		require.Equal(t, tc.want, string(got))
		again, err := ledger.CanonicalJSON(got)
		require.NoError(t, err)
		require.Equal(t, string(got), string(again), "canonical JSON is a fixed point")
	}
	for _, bad := range []string{``, `{`, `{"a":1} {"b":2}`, `[1]]`, `nul`} {
		_, err := ledger.CanonicalJSON(json.RawMessage(bad))
		require.Error(t, err, "%q", bad)
	}
	_, err := ledger.CanonicalJSON(func() {})
	require.Error(t, err)
}

// TestHashRecordEncoding pins the documented preimage, built here by hand,
// so the format cannot change silently.
func TestHashRecordEncoding(t *testing.T) {
	r := ledger.AuditRecord{
		Seq:      42,
		Time:     time.Date(2025, 1, 2, 3, 4, 5, 600_000_000, time.FixedZone("X", 3600)),
		Kind:     "directory_swap",
		Tenant:   "",
		Subject:  "v2",
		Data:     json.RawMessage(`{"a":1}`),
		PrevHash: strings.Repeat("ab", 32),
		Hash:     "ignored",
	}
	pre := "16:402claw.audit.v1," +
		"64:" + strings.Repeat("ab", 32) + "," +
		"2:42," +
		"27:2025-01-02T02:04:05.600000Z," +
		"14:directory_swap," +
		"0:," +
		"2:v2," +
		`7:{"a":1},`
	sum := sha256.Sum256([]byte(pre))
	require.Equal(t, hex.EncodeToString(sum[:]), ledger.HashRecord(r))

	// Every field is covered.
	h := ledger.HashRecord(r)
	for name, mut := range map[string]func(r *ledger.AuditRecord){
		"seq":     func(r *ledger.AuditRecord) { r.Seq++ },
		"time":    func(r *ledger.AuditRecord) { r.Time = r.Time.Add(time.Microsecond) },
		"kind":    func(r *ledger.AuditRecord) { r.Kind = "directory_swaps" },
		"tenant":  func(r *ledger.AuditRecord) { r.Tenant = "v" },
		"subject": func(r *ledger.AuditRecord) { r.Subject = "" },
		"data":    func(r *ledger.AuditRecord) { r.Data = json.RawMessage(`{"a":2}`) },
		"prev":    func(r *ledger.AuditRecord) { r.PrevHash = ledger.GenesisHash },
	} {
		c := r
		mut(&c)
		require.NotEqual(t, h, ledger.HashRecord(c), name)
	}
	// Moving a byte between adjacent fields changes the hash (netstrings).
	a, b := r, r
	a.Tenant, a.Subject = "x", "v2"
	b.Tenant, b.Subject = "", "xv2"
	require.NotEqual(t, ledger.HashRecord(a), ledger.HashRecord(b))
	// Sub-microsecond time is not part of the hash: stores keep microseconds.
	c := r
	c.Time = c.Time.Add(999 * time.Nanosecond)
	require.Equal(t, h, ledger.HashRecord(c))
}

func TestSeal(t *testing.T) {
	r := ledger.Seal(ledger.AuditRecord{Time: t0.Add(1500 * time.Nanosecond), Kind: "k", Data: json.RawMessage(`{}`)}, 0, ledger.GenesisHash)
	require.Equal(t, int64(1), r.Seq)
	require.Equal(t, ledger.GenesisHash, r.PrevHash)
	require.Equal(t, t0.Add(time.Microsecond), r.Time)
	require.Equal(t, ledger.HashRecord(r), r.Hash)
	r2 := ledger.Seal(ledger.AuditRecord{Time: t0, Kind: "k"}, r.Seq, r.Hash)
	require.Equal(t, int64(2), r2.Seq)
	require.Equal(t, r.Hash, r2.PrevHash)
}

// tamperStore is a hand-written fake over a real store whose Fn fields
// rewrite what the store returns, to simulate tampering with the backend.
type tamperStore struct {
	ledger.Store
	AuditFn func(rs []ledger.AuditRecord) []ledger.AuditRecord
	EntryFn func(e ledger.Entry, err error) (ledger.Entry, error)
	ListErr error
}

func (s *tamperStore) ListAudit(ctx context.Context, p ledger.ListAuditParams) ([]ledger.AuditRecord, error) {
	if s.ListErr != nil {
		return nil, s.ListErr
	}
	rs, err := s.Store.ListAudit(ctx, p)
	if err != nil || s.AuditFn == nil {
		return rs, err
	}
	return s.AuditFn(rs), nil
}

func (s *tamperStore) GetEntry(ctx context.Context, tenant, key string) (ledger.Entry, error) {
	e, err := s.Store.GetEntry(ctx, tenant, key)
	if s.EntryFn == nil {
		return e, err
	}
	return s.EntryFn(e, err)
}

// rewrite applies fn to the record with sequence number seq.
func rewrite(seq int64, fn func(r *ledger.AuditRecord)) func([]ledger.AuditRecord) []ledger.AuditRecord {
	return func(rs []ledger.AuditRecord) []ledger.AuditRecord {
		for i := range rs {
			if rs[i].Seq == seq {
				fn(&rs[i])
			}
		}
		return rs
	}
}

func TestVerifyFindsFirstBrokenLink(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		store   func(ts *tamperStore)
		wantSeq int64
		reason  string
	}{
		{"data changed", func(ts *tamperStore) {
			ts.AuditFn = rewrite(5, func(r *ledger.AuditRecord) { r.Data = json.RawMessage(`{"version":999}`) })
		}, 5, "hash"},
		{"data changed and rehashed", func(ts *tamperStore) {
			ts.AuditFn = rewrite(5, func(r *ledger.AuditRecord) {
				r.Data = json.RawMessage(`{"version":999}`)
				r.Hash = ledger.HashRecord(*r)
			})
		}, 6, "prev hash"},
		{"kind changed", func(ts *tamperStore) {
			ts.AuditFn = rewrite(3, func(r *ledger.AuditRecord) { r.Kind = "other" })
		}, 3, "hash"},
		{"time changed", func(ts *tamperStore) {
			ts.AuditFn = rewrite(8, func(r *ledger.AuditRecord) { r.Time = r.Time.Add(time.Second) })
		}, 8, "hash"},
		{"record removed", func(ts *tamperStore) {
			ts.AuditFn = func(rs []ledger.AuditRecord) []ledger.AuditRecord {
				var out []ledger.AuditRecord
				for _, r := range rs {
					if r.Seq != 4 {
						out = append(out, r)
					}
				}
				return out
			}
		}, 4, "gap"},
		{"records swapped", func(ts *tamperStore) {
			ts.AuditFn = func(rs []ledger.AuditRecord) []ledger.AuditRecord {
				for i := range rs {
					if rs[i].Seq == 2 && i+1 < len(rs) {
						rs[i], rs[i+1] = rs[i+1], rs[i]
					}
				}
				return rs
			}
		}, 2, "gap"},
		{"garbage hash", func(ts *tamperStore) {
			ts.AuditFn = rewrite(1, func(r *ledger.AuditRecord) { r.Hash = strings.ToUpper(r.Hash) })
		}, 1, "hash"},
		{"entry amount changed", func(ts *tamperStore) {
			ts.EntryFn = func(e ledger.Entry, err error) (ledger.Entry, error) {
				if e.IdempotencyKey == "k7" {
					e.Amount = "0.02"
				}
				return e, err
			}
		}, 7, "differs"},
		{"entry missing", func(ts *tamperStore) {
			ts.EntryFn = func(e ledger.Entry, err error) (ledger.Entry, error) {
				if e.IdempotencyKey == "k2" {
					return ledger.Entry{}, ledger.ErrNotFound
				}
				return e, err
			}
		}, 2, "missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			ts := &tamperStore{Store: memory.NewLedger()}
			l, err := ledger.New(ts, ledger.Config{Now: clock(), VerifyPage: 3})
			require.NoError(t, err)
			for i := 1; i <= 10; i++ {
				if i%5 == 0 {
					_, err = l.Audit(ctx, ledger.KindDirectorySwap, "", fmt.Sprint(i), map[string]int{"version": i})
				} else {
					_, _, err = l.RecordSettlement(ctx, settled(fmt.Sprintf("k%d", i)))
				}
				require.NoError(t, err)
			}
			n, err := l.Verify(ctx)
			require.NoError(t, err)
			require.Equal(t, int64(10), n)

			tc.store(ts)
			n, err = l.Verify(ctx)
			require.ErrorIs(t, err, ledger.ErrChainBroken)
			var ce *ledger.ChainError
			require.True(t, errors.As(err, &ce))
			require.Equal(t, tc.wantSeq, ce.Seq, err.Error())
			require.Contains(t, ce.Reason, tc.reason)
			require.Equal(t, tc.wantSeq-1, n, "records before the break verified")
			require.Contains(t, err.Error(), fmt.Sprintf("seq %d", tc.wantSeq))
		})
	}
}

func TestVerifyReturnsStorageErrors(t *testing.T) {
	t.Parallel()
	boom := errors.New("disk on fire")
	ts := &tamperStore{Store: memory.NewLedger(), ListErr: boom}
	l := newLedger(t, ts)
	_, err := l.Verify(context.Background())
	require.ErrorIs(t, err, boom)
	require.NotErrorIs(t, err, ledger.ErrChainBroken)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = newLedger(t, memory.NewLedger()).Verify(ctx)
	require.ErrorIs(t, err, context.Canceled)
}

func TestStatusValid(t *testing.T) {
	require.True(t, ledger.StatusSettled.Valid())
	require.True(t, ledger.StatusPending.Valid())
	require.True(t, ledger.StatusFailed.Valid())
	require.False(t, ledger.Status("Settled").Valid())
}
