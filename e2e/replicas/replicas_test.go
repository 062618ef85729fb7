package replicas_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/quota"
)

// TestQuotaExactAcrossReplicas: a daily quota of 100 and 1,000 concurrent
// requests split across two replicas: exactly 100 are served, every other
// one is 429 usage_quota_exceeded, and the worker ran exactly 100 times.
func TestQuotaExactAcrossReplicas(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterConfig{dailyRequests: 100})
	// One request on each replica first, so both serve some however the
	// burst is scheduled (on a loaded machine one replica could otherwise
	// use up the whole quota before the other's first request lands).
	rs := c.fire(2, func(i int) (string, string) { return fmt.Sprintf("/t/quota/rows?warm=%d", i), "" })
	rs = append(rs, c.fire(998, func(i int) (string, string) { return fmt.Sprintf("/t/quota/rows?i=%d", i), "" })...)
	got := count(rs)
	require.Equal(t, map[string]int{"200": 100, "429 usage_quota_exceeded": 900}, got)
	require.EqualValues(t, 100, c.workerCalls.Load())
	for _, r := range rs {
		if r.status == http.StatusTooManyRequests {
			require.Equal(t, "day", r.header.Get("X-Usage-Window"))
			require.Equal(t, "0", r.header.Get("X-Usage-Remaining"))
		}
	}
	// Both replicas served some: the limit really was shared.
	per := [2]int{}
	for i, r := range rs {
		if r.status == http.StatusOK {
			per[i%2]++
		}
	}
	require.Positive(t, per[0])
	require.Positive(t, per[1])
	t.Logf("served per replica: %v", per)
}

// TestSpendCapExactAcrossReplicas: a daily spend cap of k prices and 8·k
// distinct valid payments split across two replicas: exactly k settle
// (ledger entries with status settled), every other one is
// 429 spend_cap_exceeded, and nothing else was settled.
func TestSpendCapExactAcrossReplicas(t *testing.T) {
	t.Parallel()
	const k = 7
	c := newCluster(t, clusterConfig{dailySpendUSD: "0.07", events: true})
	const path = "/t/capped/rows"
	pays := c.signPayments(t, "capped", path, 8*k)
	rs := c.fire(len(pays), func(i int) (string, string) { return path, pays[i] })
	require.Equal(t, map[string]int{"200": k, "429 spend_cap_exceeded": 7 * k}, count(rs))
	require.Equal(t, map[ledger.Status]int{ledger.StatusSettled: k}, c.entries(t, "capped"))
	require.EqualValues(t, k, c.settles.Load(), "the facilitator settled exactly k payments")
	require.EqualValues(t, k, c.workerCalls.Load(), "refused payments never reached the worker")
	for _, r := range rs {
		if r.status == http.StatusTooManyRequests {
			require.Equal(t, "day", r.header.Get("X-Spend-Window"))
			require.Equal(t, "0", r.header.Get("X-Spend-Remaining"))
		} else {
			require.NotEmpty(t, r.header.Get("PAYMENT-RESPONSE"))
		}
	}
	c.verifyChain(t)

	// The usage events of both replicas landed in PostgreSQL: k settled,
	// the rest spend_cap_exceeded.
	for _, r := range c.replicas {
		require.NoError(t, r.sink.Close(context.Background()))
	}
	evs, err := c.store.Recent(context.Background(), 1000)
	require.NoError(t, err)
	lc := map[metrics.Lifecycle]int{}
	for _, e := range evs {
		lc[e.Lifecycle]++
	}
	require.Equal(t, map[metrics.Lifecycle]int{metrics.LifecyclePaymentSettled: k, metrics.LifecycleSpendCapExceeded: 7 * k}, lc)
	rollups, err := c.store.Rollups(context.Background(), metrics.RollupQuery{From: time.Now().Add(-2 * time.Hour)})
	require.NoError(t, err)
	var revenue int64
	for _, r := range rollups {
		revenue += r.RevenueMicros
	}
	require.EqualValues(t, k*10_000, revenue)
}

// TestOnePaymentSettlesOnceAcrossReplicas: the same signed payment sent
// eight times to each of two replicas at once settles once: one answer is
// the settled response, every other is its replay (X-Payment-Deduped) or
// 409 idempotency_key_in_use; the ledger has one entry, the facilitator
// settled once, and the chain verifies.
func TestOnePaymentSettlesOnceAcrossReplicas(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterConfig{})
	const path = "/t/paid/rows?q=1"
	for round := range 3 {
		pay := c.signPayments(t, "paid", path, 1)[0]
		rs := c.fire(16, func(int) (string, string) { return path, pay })
		fresh, replays, inUse := 0, 0, 0
		for _, r := range rs {
			switch {
			case r.status == http.StatusOK && !r.deduped:
				fresh++
			case r.status == http.StatusOK && r.deduped:
				replays++
				require.Equal(t, rs[0].header.Get("X-Payment-Idempotency-Key"), r.header.Get("X-Payment-Idempotency-Key"))
			case r.status == http.StatusConflict && r.code == "idempotency_key_in_use":
				inUse++
			default:
				t.Fatalf("unexpected answer %d %s: %s", r.status, r.code, r.body)
			}
		}
		require.Equal(t, 1, fresh, "round %d: exactly one settled answer (%d replays, %d in use)", round, replays, inUse)
		require.Equal(t, round+1, c.entries(t, "paid")[ledger.StatusSettled])
		require.EqualValues(t, round+1, c.settles.Load(), "settle was called once per payment")
		require.EqualValues(t, round+1, c.workerCalls.Load())
		// Sent again afterwards, to either replica: replayed, not settled.
		for i := range 2 {
			again := c.do(i, path, pay)
			require.Equal(t, http.StatusOK, again.status, again.body)
			require.True(t, again.deduped)
		}
		require.EqualValues(t, round+1, c.settles.Load())
		t.Logf("round %d: 1 settled, %d replays, %d in use", round, replays, inUse)
	}
	c.verifyChain(t)
}

// TestPaidQuotaExactAcrossReplicas: a paid tenant with a daily usage quota
// of N, 20·N concurrent requests with distinct valid payments spread over
// two replicas: the combined check (rate limits, usage and spend in one
// script) serves exactly N, settles exactly N, and counts exactly N units
// and N prices; every other answer is 429 usage_quota_exceeded and never
// reached the worker.
func TestPaidQuotaExactAcrossReplicas(t *testing.T) {
	t.Parallel()
	const n = 6
	c := newCluster(t, clusterConfig{dailyRequests: n})
	const path = "/t/full/rows"
	pays := c.signPayments(t, "full", path, 20*n)
	rs := c.fire(len(pays), func(i int) (string, string) { return path, pays[i] })
	got := count(rs)
	require.Equal(t, n, got["200"], "%v", got)
	require.Equal(t, 19*n, got["429 usage_quota_exceeded"], "%v", got)
	require.EqualValues(t, n, c.workerCalls.Load())
	require.EqualValues(t, n, c.settleOK.Load())
	require.Equal(t, map[ledger.Status]int{ledger.StatusSettled: n}, c.entries(t, "full"))
	ctx := context.Background()
	day := quota.DayWindow(time.Now()).ID
	use, err := c.rdb.Get(ctx, c.prefix+"q:{full}:use:d:"+day).Int64()
	require.NoError(t, err)
	require.EqualValues(t, n, use)
	spend, err := c.rdb.Get(ctx, c.prefix+"q:{full}:spend:d:"+day).Int64()
	require.NoError(t, err)
	require.EqualValues(t, n*10_000, spend, "micro-USD")
}
