package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/x402"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	ms := func(xs ...int) []time.Duration {
		out := make([]time.Duration, len(xs))
		for i, x := range xs {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	for _, tc := range []struct {
		name string
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value", ms(7), 99, 7 * time.Millisecond},
		{"p50 of 1..100", ms(hundred...), 50, 50 * time.Millisecond},
		{"p95 of 1..100", ms(hundred...), 95, 95 * time.Millisecond},
		{"p99 of 1..100", ms(hundred...), 99, 99 * time.Millisecond},
		{"p100 is the max", ms(hundred...), 100, 100 * time.Millisecond},
		{"p50 of four rounds up the rank", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p51 of four", ms(1, 2, 3, 4), 51, 3 * time.Millisecond},
		{"p99 of ten is the max", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"tiny p is the min", ms(5, 6, 7), 0.001, 5 * time.Millisecond},
	} {
		require.Equal(t, tc.want, percentile(tc.in, tc.p), tc.name)
	}
}

func TestSummarizeGroupsByOutcome(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_700_000_000, 0)
	var obs []observation
	for i := 1; i <= 10; i++ {
		obs = append(obs, observation{Start: t0, End: t0.Add(time.Duration(i) * time.Millisecond), Outcome: outServed})
	}
	obs = append(obs, observation{Start: t0, End: t0.Add(time.Second), Outcome: "429 rate_limited"})
	st := summarize(obs)
	require.Len(t, st, 2)
	require.Equal(t, outServed, st[0].Outcome)
	require.Equal(t, 10, st[0].Count)
	require.Equal(t, 5*time.Millisecond, st[0].P50)
	require.Equal(t, 10*time.Millisecond, st[0].P99)
	require.Equal(t, "429 rate_limited", st[1].Outcome)
	var buf bytes.Buffer
	printSummary(&buf, obs, time.Second)
	require.Contains(t, buf.String(), "429 rate_limited")
	require.Contains(t, buf.String(), "ALL")
}

func settleHeader(t *testing.T, sr x402.SettleResponse) string {
	b, err := json.Marshal(sr)
	require.NoError(t, err)
	return base64.StdEncoding.EncodeToString(b)
}

func TestClassify(t *testing.T) {
	t.Parallel()
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	ok := settleHeader(t, x402.SettleResponse{Success: true, Transaction: "0xabc", Network: "eip155:84532"})
	failed := settleHeader(t, x402.SettleResponse{Success: false, ErrorReason: "unexpected_settle_error"})
	pending := settleHeader(t, x402.SettleResponse{Success: false, ErrorReason: x402.ReasonSettlementPending})
	for _, tc := range []struct {
		name   string
		status int
		h      http.Header
		body   string
		paid   bool
		want   string
		tx     string
	}{
		{"free 200", 200, nil, `{"ok":true}`, false, outServed, ""},
		{"paid 200", 200, h("PAYMENT-RESPONSE", ok), `{}`, true, outPaid, "0xabc"},
		{"replay", 200, h("PAYMENT-RESPONSE", ok, "X-Payment-Deduped", "true"), `{}`, true, outReplayed, "0xabc"},
		{"paid 200 without receipt", 200, nil, `{}`, true, outPaidNoReceipt, ""},
		{"challenge", 402, nil, `{"x402Version":1}`, false, outChallenge, ""},
		{"rejected", 402, nil, `{"x402Version":1}`, true, outRejected, ""},
		{"settle failed", 402, h("PAYMENT-RESPONSE", failed), `{}`, true, outSettleFailed, ""},
		{"settle pending v1", 402, h("X-PAYMENT-RESPONSE", pending), `{}`, true, outSettlePending, ""},
		{"gateway error", 429, nil, `{"ok":false,"error":"rate_limited","message":"x","requestId":"r"}`, false, "429 rate_limited", ""},
		{"gateway 502", 502, nil, `{"ok":false,"error":"facilitator_unavailable"}`, true, "502 facilitator_unavailable", ""},
		{"worker's own 500", 500, nil, "injected worker failure\n", false, "500 worker", ""},
	} {
		got, tx := classify(tc.status, tc.h, []byte(tc.body), tc.paid)
		require.Equal(t, tc.want, got, tc.name)
		require.Equal(t, tc.tx, tx, tc.name)
	}
}

func TestTenantOfResource(t *testing.T) {
	t.Parallel()
	require.Equal(t, "acme", tenantOfResource("http://127.0.0.1:8402/t/acme/items/1?x=2"))
	require.Equal(t, "", tenantOfResource("http://acme.example/items"))
}

func TestGeneratedDirectoryParses(t *testing.T) {
	t.Parallel()
	ts := genTenants("lgtest", 10, 10)
	b, err := directoryJSON(ts)
	require.NoError(t, err)
	require.True(t, json.Valid(b))
	var paid, rate, quota, spend int
	for _, x := range ts {
		l := limitsOf(x)
		if l.Paid {
			paid++
		}
		if x.tightRate() {
			rate++
		}
		if l.DailyRequests > 0 || l.MonthlyRequests > 0 {
			quota++
		}
		if l.DailySpend.IsPositive() || l.MonthlySpend.IsPositive() {
			spend++
		}
	}
	require.Equal(t, 10, paid)
	require.Positive(t, rate)
	require.Positive(t, quota)
	require.Positive(t, spend)
}

// scenario is a consistent little run that every check passes; each test
// below plants one breach in it.
type scenario struct {
	in  checkInput
	day time.Time
}

func cleanScenario() *scenario {
	day := time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)
	s := &scenario{day: day}
	s.in = checkInput{
		Tenants: map[string]tenantLimits{
			"free": {DailyRequests: 3},
			"paid": {Paid: true, Price: decimal.RequireFromString("0.01"), DailyRequests: 5, DailySpend: decimal.RequireFromString("0.03")},
		},
		LedgerRead:   true,
		AuditRecords: 10,
		Chains:       []chainResult{{Ran: true, Records: 10, How: "ledger.Verify"}},
	}
	for i := 0; i < 3; i++ {
		s.in.Obs = append(s.in.Obs, observation{Start: day, End: day.Add(time.Millisecond), Tenant: "free", Outcome: outServed, Status: 200})
	}
	for i := 0; i < 3; i++ {
		s.addPaid(i)
	}
	return s
}

// addPaid adds a consistent paid request number i: a facilitator
// settlement, its ledger entry and the harness's paid answer.
func (s *scenario) addPaid(i int) {
	key := "auth:" + strings.Repeat(string(rune('a'+i)), 8)
	tx := "0x" + strings.Repeat(string(rune('a'+i)), 64)
	at := s.day.Add(time.Duration(i) * time.Minute)
	s.in.Settles = append(s.in.Settles, settleRecord{Time: at, Tenant: "paid", Key: key, TxHash: tx, Payer: "0xPayer", Amount: "10000", PayTo: "0xPayTo", Answered: true})
	s.in.Ledger = append(s.in.Ledger, ledger.Entry{ID: uuid.New(), IdempotencyKey: key, Tenant: "paid", Payer: "0xpayer", Amount: "0.01", AmountAtomic: "10000", PayTo: "0xpayto", TxHash: tx, Status: ledger.StatusSettled, Time: at})
	s.in.Obs = append(s.in.Obs, observation{Start: at, End: at.Add(time.Millisecond), Tenant: "paid", Outcome: outPaid, Status: 200, Paid: true, AuthKey: key, TxHash: tx})
}

func failed(cs []checkResult) map[string][]string {
	out := map[string][]string{}
	for _, c := range cs {
		if c.Skipped == "" && !c.OK {
			out[c.Name] = c.Breaches
		}
	}
	return out
}

func requireFailure(t *testing.T, cs []checkResult, nameContains, breachContains string) {
	t.Helper()
	f := failed(cs)
	require.NotEmpty(t, f, "the planted breach was not caught")
	found := false
	for name, bs := range f {
		if strings.Contains(name, nameContains) {
			found = true
			require.Contains(t, strings.Join(bs, "\n"), breachContains)
		}
	}
	require.True(t, found, "no failed check named like %q; failures: %v", nameContains, f)
}

func TestCleanScenarioPasses(t *testing.T) {
	t.Parallel()
	s := cleanScenario()
	cs := checkInvariants(s.in)
	require.Empty(t, failed(cs))
	var buf bytes.Buffer
	require.True(t, printChecks(&buf, cs))
	require.NotContains(t, buf.String(), "FAIL")
}

func TestCatchesDoubleSettlement(t *testing.T) {
	t.Parallel()
	s := cleanScenario()
	// The same key settled a second time: a second entry and a second
	// settlement of one authorization.
	e := s.in.Ledger[0]
	e.ID = uuid.New()
	e.TxHash = "0x" + strings.Repeat("f", 64)
	s.in.Ledger = append(s.in.Ledger, e)
	st := s.in.Settles[0]
	st.TxHash = e.TxHash
	s.in.Settles = append(s.in.Settles, st)
	cs := checkInvariants(s.in)
	requireFailure(t, cs, "settled twice", "2 settled or pending entries")
	requireFailure(t, cs, "settled twice", "settled 2 times by the facilitator")
}

func TestCatchesSettlementMissingFromLedger(t *testing.T) {
	t.Parallel()
	s := cleanScenario()
	s.in.Ledger = s.in.Ledger[1:]
	cs := checkInvariants(s.in)
	requireFailure(t, cs, "facilitator settlements <-> ledger", "matches 0 ledger entries")
	requireFailure(t, cs, "every paid 2xx", "no settled ledger entry")
}

func TestCatchesLedgerEntryWithoutSettlement(t *testing.T) {
	t.Parallel()
	s := cleanScenario()
	s.in.Settles = s.in.Settles[1:]
	requireFailure(t, checkInvariants(s.in), "ledger settled entries <-> facilitator", "matches 0 facilitator settlements")
}

func TestCatchesLedgerEntryThatDiffersFromSettlement(t *testing.T) {
	t.Parallel()
	s := cleanScenario()
	s.in.Ledger[1].AmountAtomic = "1"
	requireFailure(t, checkInvariants(s.in), "ledger settled entries <-> facilitator", "differs from its settlement")
}

func TestPendingEntryMatchesSettlementByKey(t *testing.T) {
	t.Parallel()
	s := cleanScenario()
	// The facilitator settled but the gateway got no answer and recorded
	// the key as pending: consistent.
	s.in.Ledger[2].Status, s.in.Ledger[2].TxHash = ledger.StatusPending, ""
	s.in.Obs = s.in.Obs[:len(s.in.Obs)-1]
	require.Empty(t, failed(checkInvariants(s.in)))
}

func TestCatchesOverCapSpend(t *testing.T) {
	t.Parallel()
	s := cleanScenario()
	s.addPaid(3) // four settlements of $0.01 against a $0.03 daily cap
	cs := checkInvariants(s.in)
	requireFailure(t, cs, "spend per tenant", "spent 0.04")
	requireFailure(t, cs, "charged per tenant", "charged the harness 0.04")
}

func TestCatchesMonthlySpendOverCap(t *testing.T) {
	t.Parallel()
	s := cleanScenario()
	l := s.in.Tenants["paid"]
	l.DailySpend, l.MonthlySpend = decimal.Zero, decimal.RequireFromString("0.02")
	s.in.Tenants["paid"] = l
	requireFailure(t, checkInvariants(s.in), "spend per tenant", "monthly cap 0.02")
}

func TestCatchesOverQuotaServes(t *testing.T) {
	t.Parallel()
	s := cleanScenario()
	o := s.in.Obs[0]
	s.in.Obs = append(s.in.Obs, o) // a fourth free 2xx against a quota of 3
	requireFailure(t, checkInvariants(s.in), "served 2xx", "4 served on 2026-03-14, daily quota 3")

	// Replays are not served requests: they consume no quota.
	s = cleanScenario()
	o.Deduped, o.Outcome = true, outReplayed
	s.in.Obs = append(s.in.Obs, o)
	require.Empty(t, failed(checkInvariants(s.in)))
}

func TestCatchesEarlyQuotaRefusal(t *testing.T) {
	t.Parallel()
	s := cleanScenario()
	l := s.in.Tenants["free"]
	l.ExactQuota = true
	s.in.Tenants["free"] = l
	refusal := observation{Start: s.day, End: s.day.Add(time.Millisecond), Tenant: "free", Outcome: "429 usage_quota_exceeded", Status: 429}
	s.in.Obs = append(s.in.Obs, refusal)
	require.Empty(t, failed(checkInvariants(s.in)), "3 served of 3, then refused: exact")

	s.in.Obs = append(s.in.Obs[:1], s.in.Obs[2:]...) // only 2 served before the refusal
	requireFailure(t, checkInvariants(s.in), "exactly at the quota", "refused after 2 served, daily quota 3")

	// A transport error may have consumed a unit: not judged.
	s.in.Obs = append(s.in.Obs, observation{Start: s.day, End: s.day, Tenant: "free", Outcome: outConnError})
	require.Empty(t, failed(checkInvariants(s.in)))
}

func TestCatchesOverQuotaInLedger(t *testing.T) {
	t.Parallel()
	s := cleanScenario()
	l := s.in.Tenants["paid"]
	l.DailyRequests, l.DailySpend = 2, decimal.Zero
	s.in.Tenants["paid"] = l
	cs := checkInvariants(s.in)
	requireFailure(t, cs, "settled+pending entries per paid tenant", "3 ledger entries on 2026-03-14, daily quota 2")
	requireFailure(t, cs, "served 2xx", "3 served on 2026-03-14, daily quota 2")
}

func TestCatchesBrokenChain(t *testing.T) {
	t.Parallel()
	s := cleanScenario()
	s.in.Chains = append(s.in.Chains, chainResult{Ran: true, How: "httpserver verify", Err: &ledger.ChainError{Seq: 7, Reason: "hash mismatch"}})
	requireFailure(t, checkInvariants(s.in), "audit chain", "httpserver verify")

	s = cleanScenario()
	s.in.AuditRecords = 2
	requireFailure(t, checkInvariants(s.in), "audit chain", "2 audit records for 3 ledger entries")
}

func TestCatchesTwoAnswersForOneAuthorization(t *testing.T) {
	t.Parallel()
	s := cleanScenario()
	o := s.in.Obs[len(s.in.Obs)-1]
	o.Outcome, o.TxHash = outServed, "" // a second non-replayed 2xx for one payment
	s.in.Obs = append(s.in.Obs, o)
	requireFailure(t, checkInvariants(s.in), "settled twice", "got 2 non-replayed 2xx answers")
}

func TestCatchesChargedFreeTenant(t *testing.T) {
	t.Parallel()
	s := cleanScenario()
	s.in.Ledger[0].Tenant = "free"
	s.in.Settles[0].Tenant = "free"
	s.in.Obs[3].Tenant = "free"
	requireFailure(t, checkInvariants(s.in), "free tenants", "free tenant free")
}

func TestSettlementCutOffBySIGKILLIsAWarning(t *testing.T) {
	t.Parallel()
	s := cleanScenario()
	// The last paid request was cut off by a kill after the facilitator
	// settled and before the ledger write.
	last := len(s.in.Obs) - 1
	o := s.in.Obs[last]
	o.Outcome, o.Status, o.TxHash, o.Err = outConnError, 0, "", "connection reset"
	s.in.Obs[last] = o
	s.in.Ledger = s.in.Ledger[:2]
	s.in.Kills = []killWindow{{Killed: o.Start, Healthy: o.End.Add(time.Second)}}
	cs := checkInvariants(s.in)
	require.Empty(t, failed(cs))
	var warned bool
	for _, c := range cs {
		warned = warned || len(c.Warnings) > 0
	}
	require.True(t, warned)

	s.in.StrictCrash = true
	requireFailure(t, checkInvariants(s.in), "facilitator settlements <-> ledger", "matches 0 ledger entries")

	// Without a kill around it, the same loss is a breach.
	s.in.StrictCrash, s.in.Kills = false, nil
	requireFailure(t, checkInvariants(s.in), "facilitator settlements <-> ledger", "matches 0 ledger entries")
}

func TestLedgerChecksSkipWhenUnreadable(t *testing.T) {
	t.Parallel()
	s := cleanScenario()
	s.in.LedgerRead, s.in.Ledger, s.in.Chains, s.in.AuditRecords = false, nil, nil, -1
	cs := checkInvariants(s.in)
	require.Empty(t, failed(cs))
	skipped := 0
	for _, c := range cs {
		if c.Skipped != "" {
			skipped++
		}
	}
	require.GreaterOrEqual(t, skipped, 5)
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	c, err := parseFlags([]string{"-duration", "5s", "-concurrency", "4", "-kill-every", "2s"}, &buf)
	require.NoError(t, err)
	require.Equal(t, 5*time.Second, c.duration)
	require.Equal(t, 4, c.concurrency)
	_, err = parseFlags([]string{"-kill-every", "2s", "-store", "memory"}, &buf)
	require.Error(t, err)
	c, err = parseFlags([]string{"-no-faults"}, &buf)
	require.NoError(t, err)
	require.Zero(t, c.worker.Fail)
	require.Zero(t, c.fac.SettleFail)
	_, err = parseFlags([]string{"-duration", "0s"}, &buf)
	require.Error(t, err)
	require.True(t, errors.Is(func() error { _, err := parseFlags([]string{"-h"}, &buf); return err }(), flag.ErrHelp))
}
