package metrics_test

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/metrics/metricstest"
)

func TestNormalizeUsageEvent(t *testing.T) {
	t.Parallel()
	valid := func() metrics.UsageEvent {
		return metricstest.Event("r1", "acme", "caller", now, metrics.LifecycleServed, "0.01", 12)
	}
	tests := []struct {
		name    string
		edit    func(*metrics.UsageEvent)
		wantErr bool
		check   func(*testing.T, metrics.UsageEvent)
	}{
		{name: "valid served", check: func(t *testing.T, e metrics.UsageEvent) {
			require.True(t, e.Countable)
			require.False(t, e.Billable)
			require.True(t, e.BilledUSD.IsZero())
			require.Equal(t, 200, e.Status)
		}},
		{name: "settled bills the price", edit: func(e *metrics.UsageEvent) { e.Lifecycle = metrics.LifecyclePaymentSettled },
			check: func(t *testing.T, e metrics.UsageEvent) {
				require.True(t, e.Billable)
				require.Equal(t, "0.01", e.BilledUSD.String())
			}},
		{name: "explicit billed amount kept", edit: func(e *metrics.UsageEvent) {
			e.Lifecycle = metrics.LifecyclePaymentSettled
			e.BilledUSD = decimal.RequireFromString("0.005")
		}, check: func(t *testing.T, e metrics.UsageEvent) { require.Equal(t, "0.005", e.BilledUSD.String()) }},
		{name: "flags come from the lifecycle", edit: func(e *metrics.UsageEvent) {
			e.Lifecycle = metrics.LifecyclePaymentChallenged
			e.Countable, e.Billable = true, true
			e.BilledUSD = decimal.RequireFromString("1")
		}, check: func(t *testing.T, e metrics.UsageEvent) {
			require.False(t, e.Countable, "a 402 challenge is not a call")
			require.False(t, e.Billable)
			require.True(t, e.BilledUSD.IsZero())
			require.Equal(t, 402, e.Status)
		}},
		{name: "defaults and trimming", edit: func(e *metrics.UsageEvent) {
			e.RequestID, e.APIID, e.Endpoint, e.Directory, e.CallerID = " r1 ", "\tacme\n", " ", "", ""
			e.Time = time.Date(2025, 3, 10, 12, 0, 0, 123456789, time.FixedZone("X", 3600))
		}, check: func(t *testing.T, e metrics.UsageEvent) {
			require.Equal(t, "r1", e.RequestID)
			require.Equal(t, "acme", e.APIID)
			require.Equal(t, "/", e.Endpoint)
			require.Equal(t, metrics.DefaultDirectory, e.Directory)
			require.Equal(t, metrics.AnonymousCaller, e.CallerID)
			require.Equal(t, time.Date(2025, 3, 10, 11, 0, 0, 123456000, time.UTC), e.Time)
		}},
		{name: "worker error default status", edit: func(e *metrics.UsageEvent) { e.Lifecycle = metrics.LifecycleWorkerError },
			check: func(t *testing.T, e metrics.UsageEvent) {
				require.Equal(t, 502, e.Status)
				require.True(t, e.IsFailure())
			}},
		{name: "served 503 is a failure", edit: func(e *metrics.UsageEvent) { e.Status = 503 },
			check: func(t *testing.T, e metrics.UsageEvent) { require.True(t, e.IsFailure()) }},
		{name: "served 404 is not a failure", edit: func(e *metrics.UsageEvent) { e.Status = 404 },
			check: func(t *testing.T, e metrics.UsageEvent) { require.False(t, e.IsFailure()) }},
		{name: "rate limited is not a failure", edit: func(e *metrics.UsageEvent) { e.Lifecycle = metrics.LifecycleRateLimited },
			check: func(t *testing.T, e metrics.UsageEvent) {
				require.False(t, e.IsFailure())
				require.Equal(t, 429, e.Status)
			}},
		{name: "missing time", edit: func(e *metrics.UsageEvent) { e.Time = time.Time{} }, wantErr: true},
		{name: "missing request id", edit: func(e *metrics.UsageEvent) { e.RequestID = "  " }, wantErr: true},
		{name: "missing api id", edit: func(e *metrics.UsageEvent) { e.APIID = "" }, wantErr: true},
		{name: "long id", edit: func(e *metrics.UsageEvent) { e.CallerID = strings.Repeat("x", 129) }, wantErr: true},
		{name: "long endpoint", edit: func(e *metrics.UsageEvent) { e.Endpoint = strings.Repeat("x", 513) }, wantErr: true},
		{name: "unknown lifecycle", edit: func(e *metrics.UsageEvent) { e.Lifecycle = "paid" }, wantErr: true},
		{name: "empty lifecycle", edit: func(e *metrics.UsageEvent) { e.Lifecycle = "" }, wantErr: true},
		{name: "bad status", edit: func(e *metrics.UsageEvent) { e.Status = 99 }, wantErr: true},
		{name: "status 600", edit: func(e *metrics.UsageEvent) { e.Status = 600 }, wantErr: true},
		{name: "negative latency", edit: func(e *metrics.UsageEvent) { e.LatencyMs = -1 }, wantErr: true},
		{name: "negative price", edit: func(e *metrics.UsageEvent) { e.PriceUSD = decimal.RequireFromString("-0.01") }, wantErr: true},
		{name: "seven decimals", edit: func(e *metrics.UsageEvent) { e.PriceUSD = decimal.RequireFromString("0.0000001") }, wantErr: true},
		{name: "huge price", edit: func(e *metrics.UsageEvent) { e.PriceUSD = decimal.RequireFromString("1e30") }, wantErr: true},
		{name: "bad billed", edit: func(e *metrics.UsageEvent) {
			e.Lifecycle = metrics.LifecyclePaymentSettled
			e.BilledUSD = decimal.RequireFromString("0.1234567")
		}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := valid()
			if tc.edit != nil {
				tc.edit(&e)
			}
			got, err := metrics.NormalizeUsageEvent(e)
			if tc.wantErr {
				require.ErrorIs(t, err, metrics.ErrInvalidEvent)
				return
			}
			require.NoError(t, err)
			tc.check(t, got)
			again, err := metrics.NormalizeUsageEvent(got)
			require.NoError(t, err)
			require.Equal(t, mustJSON(t, got), mustJSON(t, again), "normalizing is idempotent")
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

func TestLifecycles(t *testing.T) {
	t.Parallel()
	all := []metrics.Lifecycle{
		metrics.LifecycleServed, metrics.LifecyclePaymentSettled, metrics.LifecyclePaymentReplayed,
		metrics.LifecyclePaymentChallenged, metrics.LifecyclePaymentInvalid, metrics.LifecyclePaymentSettlementFailed,
		metrics.LifecycleRateLimited, metrics.LifecycleUsageQuotaExceeded, metrics.LifecycleSpendCapExceeded,
		metrics.LifecycleWorkerError,
	}
	countable := map[metrics.Lifecycle]bool{
		metrics.LifecycleServed: true, metrics.LifecyclePaymentSettled: true,
		metrics.LifecyclePaymentSettlementFailed: true, metrics.LifecycleWorkerError: true,
	}
	for _, l := range all {
		require.True(t, l.Valid(), l)
		require.Equal(t, countable[l], l.Countable(), l)
		require.Equal(t, l == metrics.LifecyclePaymentSettled, l.Billable(), l)
	}
	require.False(t, metrics.Lifecycle("nope").Valid())
}

func TestHashCaller(t *testing.T) {
	t.Parallel()
	h := metrics.HashCaller("sk_live_secret")
	require.Equal(t, h, metrics.HashCaller("sk_live_secret"))
	require.NotEqual(t, h, metrics.HashCaller("sk_live_secreT"))
	require.Regexp(t, `^c_[0-9a-f]{32}$`, h)
	require.NotContains(t, h, "secret")
	// SHA-256("abc") starts with ba7816bf8f01cfea414140de5dae2223.
	require.Equal(t, "c_ba7816bf8f01cfea414140de5dae2223", metrics.HashCaller("abc"))
}

func TestUsageEventJSON(t *testing.T) {
	t.Parallel()
	in := metricstest.Event("r1", "acme", "x", now, metrics.LifecyclePaymentSettled, "0.10", 12)
	in.ClientNet, in.Payer = metrics.HashClientNet(netip.MustParseAddr("192.0.2.7")), metrics.HashPayer("0xABC")
	e, err := metrics.NormalizeUsageEvent(in)
	require.NoError(t, err)
	b, err := json.Marshal(e)
	require.NoError(t, err)
	require.JSONEq(t, `{"time":"2025-03-10T23:30:00Z","requestId":"r1","apiId":"acme","endpoint":"/v1/x",
		"owner":"owner-acme","directory":"data","callerId":"`+metrics.HashCaller("x")+`",
		"clientNet":"`+in.ClientNet+`","payer":"`+in.Payer+`","status":200,
		"latencyMs":12,"priceUsd":"0.1","billedUsd":"0.1","lifecycle":"payment_settled","billable":true,"countable":true}`, string(b))

	var back metrics.UsageEvent
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, string(b), mustJSON(t, back))

	// Numbers are accepted on input.
	require.NoError(t, json.Unmarshal([]byte(`{"requestId":"n","priceUsd":0.25,"billedUsd":"0.25"}`), &back))
	require.Equal(t, "0.25", back.PriceUSD.String())
	require.Error(t, json.Unmarshal([]byte(`{"priceUsd":"abc"}`), &back))
}

func TestUSDMicros(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in    string
		micro int64
		ok    bool
		out   string
	}{
		{"0", 0, true, "0"},
		{"0.000001", 1, true, "0.000001"},
		{"1.5", 1_500_000, true, "1.5"},
		{"0.100000", 100_000, true, "0.1"},
		{"123456.789012", 123_456_789_012, true, "123456.789012"},
		{"0.0000001", 0, false, ""},
		{"-1", 0, false, ""},
	}
	for _, tc := range tests {
		m, err := metrics.USDToMicros(decimal.RequireFromString(tc.in))
		if !tc.ok {
			require.Error(t, err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.micro, m)
		require.Equal(t, tc.out, metrics.MicrosToUSD(m))
	}
}

func TestLatencyHistogram(t *testing.T) {
	t.Parallel()
	var h metrics.LatencyHistogram
	require.Zero(t, h.Quantile(0.95))
	tests := []struct {
		name string
		obs  []int64
		p95  int64
	}{
		{"one fast", []int64{3}, 5},
		{"boundary is inclusive", []int64{100}, 100},
		{"just above", []int64{101}, 150},
		{"19 fast, 1 slow: p95 is fast", append(repeat(40, 19), 4000), 50},
		{"18 fast, 2 slow: p95 is slow", append(repeat(40, 18), 4000, 9000), 4000},
		{"overflow bucket", []int64{600_000}, 60000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h metrics.LatencyHistogram
			for _, ms := range tc.obs {
				h.Observe(ms)
			}
			require.EqualValues(t, len(tc.obs), h.Count())
			require.Equal(t, tc.p95, h.Quantile(0.95))
		})
	}
	// Merging equals observing everything in one histogram.
	var a, b, all metrics.LatencyHistogram
	for i := range int64(500) {
		all.Observe(i * 37)
		if i%2 == 0 {
			a.Observe(i * 37)
		} else {
			b.Observe(i * 37)
		}
	}
	a.Merge(&b)
	require.Equal(t, all, a)
	require.Equal(t, metrics.LatencyBuckets-1, metrics.LatencyBucket(1<<40))
	require.EqualValues(t, 60000, metrics.LatencyBucketBound(metrics.LatencyBuckets-1))
}

func repeat(v int64, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = v
	}
	return out
}
