package payment_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/payment"
)

// quotaEnv is an env whose spend caps are the real quota.Limiter over the
// memory KV, as the stage's Meter; the paid tenant's daily cap is k
// prices.
func quotaEnv(t *testing.T, k int) (*env, *quota.Limiter) {
	t.Helper()
	e := newEnv(t, nil)
	store := memory.NewKV()
	lim, err := quota.New(store, quota.Config{})
	require.NoError(t, err)
	capUSD := decimal.RequireFromString("0.01").Mul(decimal.NewFromInt(int64(k)))
	e.rebuild(rebuildOpts{
		kv:     store,
		mutate: func(c *payment.Config) { c.Meter = lim },
		dir: fmt.Sprintf(`{"tenants":[
		 {"slug":"paid","workerName":"w","priceUsd":"0.01","x402Enabled":true,"ownerUserId":"owner-1",
		  "spendLimit":{"dailySpendUsd":"%s"}}]}`, capUSD),
	})
	return e, lim
}

// The limiter is the stage's Meter as it is: no adapter in between.
var _ payment.Meter = (*quota.Limiter)(nil)

// With a daily cap of k prices, 20·k concurrent requests carrying distinct
// valid payments settle exactly k times; every other answer is
// 429 spend_cap_exceeded, with no worker call and no settlement.
func TestSpendCapExactUnderConcurrency(t *testing.T) {
	t.Parallel()
	const k = 5
	e, lim := quotaEnv(t, k)
	n := 20 * k
	hdrs := make([]http.Header, n)
	for i := range hdrs {
		hdrs[i] = e.pay(target, 1+i%2, localfacilitator.SignOptions{})
	}
	recs := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			recs[i] = e.do(target, hdrs[i])
		}()
	}
	close(start)
	wg.Wait()
	settled, refused := 0, 0
	for _, rec := range recs {
		switch rec.Code {
		case 200:
			settled++
			require.NotEmpty(t, rec.Header().Get("X-Spend-Day-Limit"))
		case 429:
			refused++
			require.Contains(t, rec.Body.String(), "spend_cap_exceeded")
			require.Equal(t, "day", rec.Header().Get("X-Spend-Window"))
			require.NotEmpty(t, rec.Header().Get("Retry-After"))
		default:
			t.Fatalf("unexpected answer %d %s", rec.Code, rec.Body.String())
		}
	}
	require.Equal(t, k, settled)
	require.Equal(t, n-k, refused)
	require.Equal(t, int64(k), e.calls.Load())
	require.Equal(t, int64(k), e.fac.settles.Load())
	require.Len(t, e.entries(), k)
	tn, _ := e.dir.Lookup("paid")
	st, err := lim.PeekSpend(context.Background(), tn)
	require.NoError(t, err)
	require.Equal(t, int64(k*10_000), st.Day.Used, "micro-USD counted: exactly the settled amount")
}

// A request whose worker fails gives its reservation back: with a cap of one
// price, a failed request leaves room for the next, which settles, and the
// one after that is refused.
func TestSpendReservationGivenBackOnWorkerFailure(t *testing.T) {
	t.Parallel()
	e, lim := quotaEnv(t, 1)
	tn, _ := e.dir.Lookup("paid")
	used := func() int64 {
		st, err := lim.PeekSpend(context.Background(), tn)
		require.NoError(t, err)
		return st.Day.Used
	}

	e.status.Store(500)
	rec := e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
	require.Equal(t, 500, rec.Code)
	require.Equal(t, int64(0), used())
	require.Equal(t, "0.01", rec.Header().Get("X-Spend-Day-Remaining"), "the headers show the amount given back")

	// An oversized answer (a worker failure after the worker ran) too.
	e.status.Store(200)
	e.rebuild(rebuildOpts{
		kv:     memory.NewKV(),
		mutate: func(c *payment.Config) { c.Meter = lim; c.MaxResponseBytes = 4 },
	})
	rec = e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
	require.Equal(t, 502, rec.Code)
	require.Equal(t, int64(0), used())

	// A settlement failure gives it back as well.
	e.rebuild(rebuildOpts{kv: memory.NewKV(), mutate: func(c *payment.Config) { c.Meter = lim }})
	e.fac.SettleFn = func(context.Context, x402.FacilitatorRequest) (*x402.SettleResponse, error) {
		return &x402.SettleResponse{ErrorReason: "insufficient_funds"}, nil
	}
	rec = e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
	require.Equal(t, 402, rec.Code)
	require.Equal(t, int64(0), used())
	e.fac.SettleFn = nil

	rec = e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
	require.Equal(t, 200, rec.Code, rec.Body.String())
	require.Equal(t, int64(10_000), used())
	require.Equal(t, "0", rec.Header().Get("X-Spend-Day-Remaining"))

	rec = e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
	require.Equal(t, 429, rec.Code)
	require.Contains(t, rec.Body.String(), "spend_cap_exceeded")
	require.Equal(t, int64(10_000), used())
	settled := 0
	for _, en := range e.entries() {
		if en.Status == ledger.StatusSettled {
			settled++
		}
	}
	require.Equal(t, 1, settled)
}

// The spend hold is taken only after verification: an invalid payment or
// a 402 challenge reserves nothing.
func TestSpendNotReservedForRefusedPayments(t *testing.T) {
	t.Parallel()
	e, lim := quotaEnv(t, 1)
	tn, _ := e.dir.Lookup("paid")
	require.Equal(t, 402, e.do(target, nil).Code)
	h := http.Header{}
	h.Set("PAYMENT-SIGNATURE", "garbage")
	require.Equal(t, 400, e.do(target, h).Code)
	expired := e.pay(target, 2, localfacilitator.SignOptions{Now: time.Now().Add(-time.Hour)})
	require.Equal(t, 402, e.do(target, expired).Code)
	st, err := lim.PeekSpend(context.Background(), tn)
	require.NoError(t, err)
	require.Equal(t, int64(0), st.Day.Used)
	require.Equal(t, int64(0), e.calls.Load())
}

var _ = dispatch.ErrSpendCapExceeded

// The real stage wired as the dispatcher wires it (rate, payment, usage)
// over one memory KV: a paid request refused by the rate limit at the
// combined check consumes no usage and no spend, is not settled, and its
// payment stays usable; a request refused after the check and before the
// worker gives usage and spend back.
func TestCombinedCheckThroughTheStage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	store := memory.NewKV()
	lim, err := quota.New(store, quota.Config{})
	require.NoError(t, err)
	refuse := dispatch.StageFunc(func(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
		if x.Request.Header.Get("X-Refuse") != "" {
			return nil, fmt.Errorf("%w: test", dispatch.ErrWorkerLimitExceeded)
		}
		return next(ctx, x)
	})
	e.rebuild(rebuildOpts{
		kv:     store,
		mutate: func(c *payment.Config) { c.Meter = lim },
		stages: func(pay *payment.Stage) []dispatch.Stage {
			return []dispatch.Stage{lim.Stage(), pay, refuse}
		},
		dir: `{"tenants":[
		 {"slug":"paid","workerName":"w","priceUsd":"0.01","x402Enabled":true,"ownerUserId":"owner-1",
		  "rateLimit":{"perCaller":{"requests":2,"windowSeconds":3600}},
		  "usageLimit":{"dailyRequests":10},"spendLimit":{"dailySpendUsd":"1"}}]}`,
	})
	tn, _ := e.dir.Lookup("paid")
	used := func() (int64, int64) {
		u, err := lim.PeekUsage(context.Background(), tn)
		require.NoError(t, err)
		s, err := lim.PeekSpend(context.Background(), tn)
		require.NoError(t, err)
		return u.Day.Used, s.Day.Used
	}

	h := e.pay(target, 2, localfacilitator.SignOptions{})
	h.Set("X-Refuse", "1")
	rec := e.do(target, h)
	require.Equal(t, http.StatusServiceUnavailable, rec.Code, rec.Body.String())
	u, s := used()
	require.Equal(t, int64(0), u, "worker not reached: the usage unit was given back")
	require.Equal(t, int64(0), s, "and the price")
	require.Equal(t, "10", rec.Header().Get("X-Usage-Day-Remaining"))

	rec = e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, "0", rec.Header().Get("X-RateLimit-Remaining"))
	require.Equal(t, "9", rec.Header().Get("X-Usage-Day-Remaining"))
	require.Equal(t, "0.99", rec.Header().Get("X-Spend-Day-Remaining"))

	over := e.pay(target, 2, localfacilitator.SignOptions{})
	rec = e.do(target, over)
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	require.Contains(t, rec.Body.String(), `"error":"rate_limited"`)
	require.NotEmpty(t, rec.Header().Get("Retry-After"))
	u, s = used()
	require.Equal(t, int64(1), u, "the rate refusal consumed no usage")
	require.Equal(t, int64(10_000), s, "and no spend")
	require.Equal(t, int64(1), e.calls.Load())
	require.Equal(t, int64(1), e.fac.settles.Load())
	require.Len(t, e.entries(), 1)
}

// A payment that fails at settlement is a rejected payment: the worker ran,
// but the request consumes no usage quota (DESIGN section 3), whether the
// usage unit was counted by the one admission.
func TestFailedSettlementConsumesNoQuota(t *testing.T) {
	t.Parallel()
	for _, combined := range []bool{true, false} {
		t.Run(fmt.Sprintf("combined=%v", combined), func(t *testing.T) {
			e := newEnv(t, nil)
			var store kv.Store = memory.NewKV()
			if !combined {
				store = plainKV{store} // no batch ability: separate steps
			}
			lim, err := quota.New(store, quota.Config{})
			require.NoError(t, err)
			e.rebuild(rebuildOpts{
				kv:     store,
				dir:    `{"tenants":[{"slug":"paid","workerName":"w","priceUsd":"0.01","x402Enabled":true,"usageLimit":{"dailyRequests":2}}]}`,
				mutate: func(c *payment.Config) { c.Meter = lim },
				stages: func(pay *payment.Stage) []dispatch.Stage {
					return []dispatch.Stage{lim.Stage(), pay}
				},
			})
			e.fac.SettleFn = func(context.Context, x402.FacilitatorRequest) (*x402.SettleResponse, error) {
				return &x402.SettleResponse{Success: false, ErrorReason: "insufficient_funds"}, nil
			}
			for i := 0; i < 4; i++ {
				rec := e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
				require.Equal(t, 402, rec.Code, rec.Body.String())
			}
			e.fac.SettleFn = nil
			for i := 0; i < 2; i++ {
				rec := e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
				require.Equal(t, 200, rec.Code, "the quota of 2 is whole: %s", rec.Body.String())
			}
			rec := e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
			require.Equal(t, 429, rec.Code)
			require.Contains(t, rec.Body.String(), "usage_quota_exceeded")
		})
	}
}

type plainKV struct{ kv.Store }
