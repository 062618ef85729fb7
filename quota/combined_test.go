package quota_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/meter"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/quota/quotatest"
	"github.com/402claw/dispatcher/tenant"
)

// countingKV counts the store calls of the counters (Incr and IncrAll).
type countingKV struct {
	*memory.KV
	calls atomic.Int64
	fail  atomic.Bool
}

var errDown = errors.New("counter store down")

func (c *countingKV) Incr(ctx context.Context, key string, in kv.Increment) (int64, bool, error) {
	c.calls.Add(1)
	if c.fail.Load() {
		return 0, false, errDown
	}
	return c.KV.Incr(ctx, key, in)
}

func (c *countingKV) IncrAll(ctx context.Context, keys []string, ins []kv.Increment) ([]int64, int, error) {
	c.calls.Add(1)
	if c.fail.Load() {
		return nil, -1, errDown
	}
	return c.KV.IncrAll(ctx, keys, ins)
}

// fakePay is the x402 payment stage's shape for the quota: no payment
// header is a 402 challenge, "bad" an undecodable payment (400), both
// metered for their rate limits only; any other payment is "verified" and
// admitted through Limiter.Admit (rate, usage unit and price in one round
// trip); "replay" then answers from a record, giving the hold back. Next
// is called, and the hold is committed with the price when the worker
// answered below 400, with nothing (the unit stays counted) when it
// answered 400 or more, and released when the worker was never called.
func fakePay(l *quota.Limiter) dispatch.Stage {
	return dispatch.StageFunc(func(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
		if !x.Price.Charges {
			return next(ctx, x)
		}
		admit := func(p meter.Params) (meter.Hold, error) {
			h, err := l.Admit(ctx, p)
			if h != nil {
				h.SetHeaders(x.Header)
			}
			return h, err
		}
		base := meter.Params{Tenant: x.Tenant, CallerID: x.CallerID, ClientIP: x.ClientIP, Rate: true}
		switch x.Request.Header.Get("Payment-Signature") {
		case "":
			if _, err := admit(base); err != nil {
				return nil, err
			}
			return dispatch.NewResponse(http.StatusPaymentRequired, nil, []byte("{}")), nil
		case "bad":
			if _, err := admit(base); err != nil {
				return nil, err
			}
			return nil, dispatch.ErrInvalidPayment
		}
		p := base
		p.Usage, p.Spend = true, x.Price.PriceUSD
		h, err := admit(p)
		if err != nil {
			return nil, err
		}
		if x.Request.Header.Get("Payment-Signature") == "replay" {
			if err := h.Release(ctx); err != nil {
				return nil, err
			}
			h.SetHeaders(x.Header)
			return dispatch.NewResponse(http.StatusOK, nil, []byte("replayed")), nil
		}
		x.CallerID = dispatch.HashCaller("payer:0xabc") // as the real stage does
		resp, err := next(ctx, x)
		switch {
		case err != nil && !x.WorkerCalled:
			err = errors.Join(err, h.Release(ctx))
		case err != nil || resp.StatusCode >= 400:
			err = errors.Join(err, h.Commit(ctx, decimal.Zero))
		default:
			err = h.Commit(ctx, x.Price.PriceUSD)
		}
		h.SetHeaders(x.Header)
		if err != nil {
			return nil, err
		}
		return resp, nil
	})
}

type paidGateway struct {
	srv   *httptest.Server
	l     *quota.Limiter
	store *countingKV
	ten   *tenant.Tenant
	calls atomic.Int64
	gate  chan struct{} // when set, holds worker calls
}

func newPaidGateway(t *testing.T, ten tenant.Tenant, stages func(l *quota.Limiter, refuse dispatch.Stage) []dispatch.Stage) *paidGateway {
	t.Helper()
	g := &paidGateway{store: &countingKV{KV: memory.NewKV()}}
	l, err := quota.New(g.store, quota.Config{Now: quotatest.NewClock(noon).Now})
	require.NoError(t, err)
	g.l = l
	ten.WorkerName = "w"
	dir, err := tenant.NewDirectory([]tenant.Tenant{ten})
	require.NoError(t, err)
	g.ten, _ = dir.Lookup(ten.Slug)
	refuse := dispatch.StageFunc(func(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
		if x.Request.Header.Get("X-Refuse") != "" {
			return nil, errRefused
		}
		return next(ctx, x)
	})
	if stages == nil {
		stages = func(l *quota.Limiter, refuse dispatch.Stage) []dispatch.Stage {
			return []dispatch.Stage{l.Stage(), fakePay(l), refuse}
		}
	}
	d, err := dispatch.NewDispatcher(dispatch.Config{
		Tenants: tenant.NewRegistry(dir),
		Fetcher: dispatch.NewHandlerFetcher(map[string]http.Handler{"w": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			g.calls.Add(1)
			if g.gate != nil {
				<-g.gate
			}
			if r.URL.Path == "/fail" {
				http.Error(w, "boom", http.StatusInternalServerError)
				return
			}
			_, _ = io.WriteString(w, "hello")
		})}),
		Stages: stages(l, refuse),
	})
	require.NoError(t, err)
	g.srv = httptest.NewServer(d)
	t.Cleanup(g.srv.Close)
	return g
}

func (g *paidGateway) get(t *testing.T, path, pay string, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, g.srv.URL+"/t/"+g.ten.Slug+path, nil)
	require.NoError(t, err)
	req.Header.Set("X-Agent-Id", "agent-1")
	if pay != "" {
		req.Header.Set("Payment-Signature", pay)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := g.srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return answer{resp.StatusCode, resp.Header, string(b)}
}

// used returns the usage and spend (micro-USD) counted today.
func (g *paidGateway) used(t *testing.T) (int64, int64) {
	t.Helper()
	u, err := g.l.PeekUsage(context.Background(), g.ten)
	require.NoError(t, err)
	s, err := g.l.PeekSpend(context.Background(), g.ten)
	require.NoError(t, err)
	return u.Day.Used, s.Day.Used
}

func paidTenant() tenant.Tenant {
	return tenant.Tenant{
		Slug: "paid", Plan: "pro", X402Enabled: true, PriceUSD: decimal.RequireFromString("0.01"),
		RateLimit:  tenant.RateLimit{PerCaller: tenant.Rate{Requests: 3, WindowSeconds: 60}, Global: tenant.Rate{Requests: 100, WindowSeconds: 60}},
		UsageLimit: tenant.UsageLimit{DailyRequests: 10, MonthlyRequests: 100},
		SpendLimit: tenant.SpendLimit{DailySpendUSD: decimal.RequireFromString("1"), MonthlySpendUSD: decimal.RequireFromString("10")},
	}
}

// A settled paid request makes ONE counter call: both rate limits, both
// usage windows and both spend windows in one IncrAll, with every header.
func TestCombinedOneStoreCallPerPaidRequest(t *testing.T) {
	t.Parallel()
	g := newPaidGateway(t, paidTenant(), nil)
	before := g.store.calls.Load()
	a := g.get(t, "/hello", "sig")
	require.Equal(t, http.StatusOK, a.status, a.body)
	require.EqualValues(t, 1, g.store.calls.Load()-before, "one counter round trip")
	for k, v := range map[string]string{
		"X-RateLimit-Limit": "3", "X-RateLimit-Remaining": "2",
		"X-Usage-Day-Remaining": "9", "X-Usage-Month-Remaining": "99",
		"X-Spend-Day-Remaining": "0.99", "X-Spend-Month-Remaining": "9.99",
	} {
		require.Equal(t, v, a.header.Get(k), k)
	}
	u, s := g.used(t)
	require.Equal(t, int64(1), u)
	require.Equal(t, int64(10_000), s)

	// The per-caller limit follows the caller the rate stage saw (the
	// agent), not the payer the payment stage put in CallerID: a free
	// request of the same agent shares it.
	a = g.get(t, "/hello", "")
	require.Equal(t, http.StatusPaymentRequired, a.status)
	require.Equal(t, "1", a.header.Get("X-RateLimit-Remaining"), "a 402 challenge costs one rate unit")
	u, s = g.used(t)
	require.Equal(t, int64(1), u, "a challenge consumes no quota")
	require.Equal(t, int64(10_000), s)
}

// A paid request refused by the rate limit at the combined check consumes
// no usage and no spend, and never reaches the worker.
func TestCombinedRateRefusalConsumesNothing(t *testing.T) {
	t.Parallel()
	g := newPaidGateway(t, paidTenant(), nil)
	for i := 0; i < 3; i++ {
		require.Equal(t, http.StatusOK, g.get(t, "/hello", "sig").status)
	}
	u0, s0 := g.used(t)
	require.Equal(t, int64(3), u0)
	calls := g.store.calls.Load()
	a := g.get(t, "/hello", "sig")
	require.Equal(t, http.StatusTooManyRequests, a.status)
	require.Contains(t, a.body, `"error":"rate_limited"`)
	require.EqualValues(t, 1, g.store.calls.Load()-calls, "the refusal is the same one round trip")
	require.NotEmpty(t, a.header.Get("Retry-After"))
	require.Equal(t, "0", a.header.Get("X-RateLimit-Remaining"))
	require.Equal(t, "7", a.header.Get("X-Usage-Day-Remaining"), "the usage headers show the counters as they stand")
	require.Equal(t, "0.97", a.header.Get("X-Spend-Day-Remaining"))
	u, s := g.used(t)
	require.Equal(t, u0, u, "no usage consumed")
	require.Equal(t, s0, s, "no spend consumed")
	require.Equal(t, int64(3), g.calls.Load())
}

// The usage quota and the spend cap refuse at the combined check too, and
// a refusal by one consumes none of the others (the rate unit included).
func TestCombinedUsageAndSpendRefusals(t *testing.T) {
	t.Parallel()
	ten := paidTenant()
	ten.RateLimit = tenant.RateLimit{PerCaller: tenant.Rate{Requests: 100, WindowSeconds: 60}}
	ten.UsageLimit = tenant.UsageLimit{DailyRequests: 2}
	g := newPaidGateway(t, ten, nil)
	for i := 0; i < 2; i++ {
		require.Equal(t, http.StatusOK, g.get(t, "/hello", "sig").status)
	}
	a := g.get(t, "/hello", "sig")
	require.Equal(t, http.StatusTooManyRequests, a.status)
	require.Contains(t, a.body, `"error":"usage_quota_exceeded"`)
	require.Equal(t, "day", a.header.Get("X-Usage-Window"))
	require.Equal(t, "98", a.header.Get("X-RateLimit-Remaining"), "the refused request took no rate unit")
	_, s := g.used(t)
	require.Equal(t, int64(20_000), s, "no spend consumed")

	ten = paidTenant()
	ten.SpendLimit = tenant.SpendLimit{DailySpendUSD: decimal.RequireFromString("0.02")}
	g = newPaidGateway(t, ten, nil)
	for i := 0; i < 2; i++ {
		require.Equal(t, http.StatusOK, g.get(t, "/hello", "sig").status)
	}
	a = g.get(t, "/hello", "sig")
	require.Equal(t, http.StatusTooManyRequests, a.status)
	require.Contains(t, a.body, `"error":"spend_cap_exceeded"`)
	require.Equal(t, "day", a.header.Get("X-Spend-Window"))
	require.Equal(t, "1", a.header.Get("X-RateLimit-Remaining"), "the refused request took no rate unit")
	u, _ := g.used(t)
	require.Equal(t, int64(2), u, "no usage consumed")
}

// A paid request whose worker is not reached gives usage and spend back (in
// one call); one the worker answered >= 400 keeps its usage unit and gives
// the price back, as the separate stages did.
func TestCombinedGiveBack(t *testing.T) {
	t.Parallel()
	ten := paidTenant()
	ten.RateLimit = tenant.RateLimit{}
	g := newPaidGateway(t, ten, nil)
	calls := g.store.calls.Load()
	a := g.get(t, "/hello", "sig", "X-Refuse", "1")
	require.Equal(t, http.StatusConflict, a.status)
	require.EqualValues(t, 2, g.store.calls.Load()-calls, "the check and one give-back")
	require.Equal(t, "10", a.header.Get("X-Usage-Day-Remaining"), "the unit was given back")
	require.Equal(t, "1", a.header.Get("X-Spend-Day-Remaining"), "the price was given back")
	u, s := g.used(t)
	require.Equal(t, int64(0), u)
	require.Equal(t, int64(0), s)
	require.Equal(t, int64(0), g.calls.Load())

	a = g.get(t, "/fail", "sig")
	require.Equal(t, http.StatusInternalServerError, a.status)
	u, s = g.used(t)
	require.Equal(t, int64(1), u, "the worker answered: the request counts")
	require.Equal(t, int64(0), s, "not settled: not charged")
}

// A payment the payment stage refuses before the combined check (here an
// undecodable one) or answers itself (a replay) consumes no quota and no
// spend but still one rate unit; over the rate limit it is answered
// 429 rate_limited, as when the rate stage checked first.
func TestCombinedRefusedPaymentsStillRateLimited(t *testing.T) {
	t.Parallel()
	g := newPaidGateway(t, paidTenant(), nil)
	a := g.get(t, "/hello", "bad")
	require.Equal(t, http.StatusBadRequest, a.status)
	require.Equal(t, "2", a.header.Get("X-RateLimit-Remaining"))
	require.Equal(t, "10", a.header.Get("X-Usage-Day-Remaining"))
	a = g.get(t, "/hello", "replay")
	require.Equal(t, http.StatusOK, a.status)
	require.Equal(t, "replayed", a.body)
	require.Equal(t, "1", a.header.Get("X-RateLimit-Remaining"))
	require.Equal(t, http.StatusOK, g.get(t, "/hello", "sig").status)
	for _, pay := range []string{"bad", "replay", "sig"} {
		a = g.get(t, "/hello", pay)
		require.Equal(t, http.StatusTooManyRequests, a.status, pay)
		require.Contains(t, a.body, `"error":"rate_limited"`)
		require.NotEmpty(t, a.header.Get("Retry-After"))
	}
	u, s := g.used(t)
	require.Equal(t, int64(1), u)
	require.Equal(t, int64(10_000), s)
	require.Equal(t, int64(1), g.calls.Load())
}

// Usage quota N, 20·N concurrent paid requests: exactly N are served, and
// the counters hold exactly N units and N prices.
func TestCombinedExactUnderConcurrency(t *testing.T) {
	t.Parallel()
	const n = 5
	ten := paidTenant()
	ten.RateLimit = tenant.RateLimit{PerCaller: tenant.Rate{Requests: 1_000_000, WindowSeconds: 60}}
	ten.UsageLimit = tenant.UsageLimit{DailyRequests: n}
	g := newPaidGateway(t, ten, nil)
	var wg sync.WaitGroup
	var ok, refused atomic.Int64
	for i := 0; i < 20*n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := g.get(t, "/hello", "sig")
			switch a.status {
			case http.StatusOK:
				ok.Add(1)
			case http.StatusTooManyRequests:
				refused.Add(1)
			}
		}()
	}
	wg.Wait()
	require.Equal(t, int64(n), ok.Load())
	require.Equal(t, int64(19*n), refused.Load())
	require.Equal(t, int64(n), g.calls.Load())
	u, s := g.used(t)
	require.Equal(t, int64(n), u)
	require.Equal(t, int64(n*10_000), s)
}

// The metering stage and the payment stage meter disjoint requests, so in
// either order a paid request's usage unit is counted exactly once and its
// rate limit once.
func TestCombinedOtherOrdersCountOnce(t *testing.T) {
	t.Parallel()
	orders := map[string]func(l *quota.Limiter, refuse dispatch.Stage) []dispatch.Stage{
		"quota,pay": func(l *quota.Limiter, _ dispatch.Stage) []dispatch.Stage {
			return []dispatch.Stage{l.Stage(), fakePay(l)}
		},
		"pay,quota": func(l *quota.Limiter, _ dispatch.Stage) []dispatch.Stage {
			return []dispatch.Stage{fakePay(l), l.Stage()}
		},
	}
	for name, stages := range orders {
		t.Run(name, func(t *testing.T) {
			g := newPaidGateway(t, paidTenant(), stages)
			for i := 0; i < 2; i++ {
				require.Equal(t, http.StatusOK, g.get(t, "/hello", "sig").status)
			}
			u, _ := g.used(t)
			require.Equal(t, int64(2), u)
			a := g.get(t, "/hello", "sig")
			require.Equal(t, http.StatusOK, a.status)
			require.Equal(t, "0", a.header.Get("X-RateLimit-Remaining"), "rate limited once per request")
			require.Equal(t, http.StatusTooManyRequests, g.get(t, "/hello", "sig").status)
		})
	}
}

// A store failure at the combined check is 503 store_unavailable, nothing
// counted and the worker not called.
func TestCombinedStoreFailure(t *testing.T) {
	t.Parallel()
	g := newPaidGateway(t, paidTenant(), nil)
	g.store.fail.Store(true)
	a := g.get(t, "/hello", "sig")
	require.Equal(t, http.StatusServiceUnavailable, a.status)
	require.Contains(t, a.body, `"error":"store_unavailable"`)
	require.NotContains(t, a.body, errDown.Error(), "internals do not leak")
	require.Empty(t, a.header.Get("X-Usage-Day-Limit"), "no made-up headers")
	require.Equal(t, int64(0), g.calls.Load())
	g.store.fail.Store(false)
	u, s := g.used(t)
	require.Equal(t, int64(0), u)
	require.Equal(t, int64(0), s)
}
