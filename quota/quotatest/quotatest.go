// Package quotatest is the conformance suite of the quota package over a
// kv.Store: exact rate limits, usage quotas and spend caps under heavy
// concurrency, give-backs that really come back, and window arithmetic at
// day and month ends (an injected clock, so it never sleeps). Every KV
// adapter runs it next to kvtest:
//
//	func TestQuotaConformance(t *testing.T) {
//		quotatest.Run(t, func(t *testing.T) kv.Store { return memory.NewKV() })
//	}
//
// The suite's clock is independent of the store's: it only relies on keys
// not expiring during the test (every TTL it causes is a minute or more).
// Run it under -race.
package quotatest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/kv/kvtest"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/tenant"
)

// Clock is a settable clock, safe for concurrent use, for Config.Now.
type Clock struct{ ns atomic.Int64 }

// NewClock returns a clock reading t.
func NewClock(t time.Time) *Clock {
	c := &Clock{}
	c.Set(t)
	return c
}

// Now returns the clock's time, in UTC.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

// Add moves the clock by d.
func (c *Clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

const (
	limitN   = 50
	attempts = 20 * limitN
	workers  = 64
)

// Run runs the whole suite; newStore returns a fresh, empty store per
// subtest.
func Run(t *testing.T, newStore func(t *testing.T) kv.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s kv.Store)
	}{
		{"RatePerCallerExact", testRatePerCaller},
		{"RateGlobalExact", testRateGlobal},
		{"RateGlobalRefusalGivesBackPerCaller", testRateGiveBack},
		{"RateHeaders", testRateHeaders},
		{"UsageDayExact", testUsageDay},
		{"UsageMonthExact", testUsageMonth},
		{"UsageDayAndMonth", testUsageDayAndMonth},
		{"UsageReleaseComesBack", testUsageRelease},
		{"SpendCapExact", testSpendExact},
		{"SpendMonthCap", testSpendMonth},
		{"SpendPartialFit", testSpendPartialFit},
		{"SpendCommitReleaseExclusive", testSpendExclusive},
		{"DayBoundary", testDayBoundary},
		{"MonthEnds", testMonthEnds},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

var noon = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func newLimiter(t *testing.T, s kv.Store, clk *Clock, plans map[string]quota.PlanRates) *quota.Limiter {
	t.Helper()
	l, err := quota.New(s, quota.Config{Now: clk.Now, Plans: plans, DraftHeaders: true})
	require.NoError(t, err)
	return l
}

func plan(perCaller, global tenant.Rate) map[string]quota.PlanRates {
	return map[string]quota.PlanRates{"free": {PerCaller: perCaller, Global: global}}
}

func rate(n, seconds int64) tenant.Rate { return tenant.Rate{Requests: n, WindowSeconds: seconds} }

func newTenant(slug string) *tenant.Tenant {
	return &tenant.Tenant{Slug: slug, WorkerName: slug + "-worker", Plan: "free"}
}

// hammer runs n calls of fn over many goroutines and counts successes.
func hammer(t *testing.T, n int, fn func(i int) (bool, error)) int {
	t.Helper()
	return int(kvtest.Hammer(t, n, workers, fn))
}

// refusal turns a *LimitError into a "no" and keeps other errors.
func refusal(err error, sentinel error) (bool, error) {
	if err == nil {
		return true, nil
	}
	var le *quota.LimitError
	if errors.As(err, &le) && errors.Is(err, sentinel) {
		return false, nil
	}
	return false, err
}

func limitError(t *testing.T, err error, sentinel error) *quota.LimitError {
	t.Helper()
	require.Error(t, err)
	require.ErrorIs(t, err, sentinel)
	var le *quota.LimitError
	require.ErrorAs(t, err, &le)
	return le
}

func unix(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }

func allow(l *quota.Limiter, ten *tenant.Tenant, caller string) func(int) (bool, error) {
	return func(int) (bool, error) {
		_, err := l.Allow(context.Background(), ten, caller)
		return refusal(err, dispatch.ErrRateLimited)
	}
}

func testRatePerCaller(t *testing.T, s kv.Store) {
	ctx := context.Background()
	clk := NewClock(noon)
	l := newLimiter(t, s, clk, plan(rate(limitN, 60), tenant.Rate{}))
	ten := newTenant("acme")

	require.Equal(t, limitN, hammer(t, attempts, allow(l, ten, "caller-a")), "exactly N of 20·N concurrent requests")

	// T = 60s/50 = 1.2s: the next request fits 1.2s later.
	st, err := l.Allow(ctx, ten, "caller-a")
	le := limitError(t, err, dispatch.ErrRateLimited)
	require.False(t, st.Allowed)
	require.Equal(t, quota.KindRate, le.Kind)
	require.Equal(t, quota.PolicyCaller, le.Window)
	require.Equal(t, 1200*time.Millisecond, le.RetryAfter)
	h := le.ResponseHeader()
	require.Equal(t, "2", h.Get("Retry-After"))
	require.Equal(t, "50", h.Get("X-RateLimit-Limit"))
	require.Equal(t, "0", h.Get("X-RateLimit-Remaining"))
	require.Equal(t, unix(noon.Add(60*time.Second)), h.Get("X-RateLimit-Reset"))

	// Another caller of the same tenant is not affected.
	st, err = l.Allow(ctx, ten, "caller-b")
	require.NoError(t, err)
	require.True(t, st.Allowed)
	require.Equal(t, int64(limitN-1), st.Remaining)

	// Refused requests did not count: 1.2s later exactly one more fits.
	clk.Add(1200 * time.Millisecond)
	require.Equal(t, 1, hammer(t, 100, allow(l, ten, "caller-a")))
	_, err = l.Allow(ctx, ten, "caller-a")
	le = limitError(t, err, dispatch.ErrRateLimited)
	require.Equal(t, 1200*time.Millisecond, le.RetryAfter)

	// A window later the whole allowance is back.
	clk.Add(60 * time.Second)
	require.Equal(t, limitN, hammer(t, attempts, allow(l, ten, "caller-a")))
}

func testRateGlobal(t *testing.T, s kv.Store) {
	ctx := context.Background()
	clk := NewClock(noon)
	l := newLimiter(t, s, clk, plan(rate(1000, 60), rate(limitN, 60)))
	ten := newTenant("acme")

	got := hammer(t, attempts, func(i int) (bool, error) {
		_, err := l.Allow(ctx, ten, fmt.Sprintf("caller-%d", i%100))
		return refusal(err, dispatch.ErrRateLimited)
	})
	require.Equal(t, limitN, got, "exactly N over all callers")

	st, err := l.Allow(ctx, ten, "caller-new")
	le := limitError(t, err, dispatch.ErrRateLimited)
	require.Equal(t, quota.PolicyTenant, le.Window)
	require.Equal(t, quota.PolicyTenant, st.Policy)
	require.Equal(t, "2", le.ResponseHeader().Get("Retry-After"))
	require.Equal(t, "50", le.ResponseHeader().Get("X-RateLimit-Limit"))
	require.Equal(t, "0", le.ResponseHeader().Get("X-RateLimit-Remaining"))
	require.Len(t, st.Policies(), 2)
	require.Equal(t, int64(1000), st.Policies()[0].Remaining, "the refused request cost the caller nothing")

	// Other tenants have their own limits.
	_, err = l.Allow(ctx, newTenant("other"), "caller-new")
	require.NoError(t, err)
}

func testRateGiveBack(t *testing.T, s kv.Store) {
	ctx := context.Background()
	clk := NewClock(noon)
	l := newLimiter(t, s, clk, plan(rate(5, 60), rate(5, 60)))
	ten := newTenant("acme")

	require.Equal(t, 5, hammer(t, 20, allow(l, ten, "caller-a")))
	// The tenant-wide limit refuses caller c every time; each refusal must
	// leave c's own allowance untouched.
	require.Equal(t, 0, hammer(t, 200, allow(l, ten, "caller-c")))
	clk.Add(60 * time.Second)
	require.Equal(t, 5, hammer(t, 200, allow(l, ten, "caller-c")), "caller c keeps its whole allowance")

	// Sequentially, with time passing: 3 per minute per caller, 5 overall.
	clk.Add(time.Hour)
	l2 := newLimiter(t, s, clk, plan(rate(3, 60), rate(5, 60)))
	ten2 := newTenant("beta")
	for i := 0; i < 3; i++ {
		_, err := l2.Allow(ctx, ten2, "a")
		require.NoError(t, err)
	}
	for i := 0; i < 2; i++ {
		_, err := l2.Allow(ctx, ten2, "b")
		require.NoError(t, err)
	}
	_, err := l2.Allow(ctx, ten2, "b")
	require.Equal(t, quota.PolicyTenant, limitError(t, err, dispatch.ErrRateLimited).Window)
	// 12s later (one tenant-wide interval) b's third request fits: it
	// would not if the refused one had cost b a unit (b's interval is 20s).
	clk.Add(12 * time.Second)
	st, err := l2.Allow(ctx, ten2, "b")
	require.NoError(t, err)
	require.True(t, st.Allowed)
}

func testRateHeaders(t *testing.T, s kv.Store) {
	ctx := context.Background()
	start := noon.Add(250 * time.Millisecond)
	clk := NewClock(start)
	l := newLimiter(t, s, clk, plan(rate(3, 3), tenant.Rate{}))
	ten := newTenant("acme")

	tests := []struct {
		remaining int64
		reset     time.Time
		draft     string
	}{
		{2, start.Add(1 * time.Second), `"caller";r=2;t=1`},
		{1, start.Add(2 * time.Second), `"caller";r=1;t=2`},
		{0, start.Add(3 * time.Second), `"caller";r=0;t=3`},
	}
	for i, tc := range tests {
		st, err := l.Allow(ctx, ten, "c")
		require.NoError(t, err, "request %d", i)
		h := http.Header{}
		st.SetHeaders(h)
		require.Equal(t, "3", h.Get("X-RateLimit-Limit"))
		require.Equal(t, strconv.FormatInt(tc.remaining, 10), h.Get("X-RateLimit-Remaining"))
		// Reset is rounded up to the next whole second.
		require.Equal(t, strconv.FormatInt(tc.reset.Unix()+1, 10), h.Get("X-RateLimit-Reset"))
		require.Equal(t, `"caller";q=3;w=3`, h.Get("RateLimit-Policy"))
		require.Equal(t, tc.draft, h.Get("RateLimit"))
	}
	_, err := l.Allow(ctx, ten, "c")
	le := limitError(t, err, dispatch.ErrRateLimited)
	require.Equal(t, time.Second, le.RetryAfter)
	require.Equal(t, "1", le.ResponseHeader().Get("Retry-After"))
	clk.Add(400 * time.Millisecond)
	_, err = l.Allow(ctx, ten, "c")
	le = limitError(t, err, dispatch.ErrRateLimited)
	require.Equal(t, 600*time.Millisecond, le.RetryAfter)
	require.Equal(t, "1", le.ResponseHeader().Get("Retry-After"), "rounded up")
	clk.Add(600 * time.Millisecond)
	_, err = l.Allow(ctx, ten, "c")
	require.NoError(t, err, "exactly at Retry-After the request fits")
}

func reserveUsage(l *quota.Limiter, ten *tenant.Tenant) func(int) (bool, error) {
	return func(int) (bool, error) {
		_, err := l.ReserveUsage(context.Background(), ten)
		return refusal(err, dispatch.ErrUsageQuotaExceeded)
	}
}

func testUsageDay(t *testing.T, s kv.Store) {
	ctx := context.Background()
	clk := NewClock(noon)
	l := newLimiter(t, s, clk, nil)
	ten := newTenant("acme")
	ten.UsageLimit.DailyRequests = limitN

	require.Equal(t, limitN, hammer(t, attempts, reserveUsage(l, ten)))
	st, err := l.PeekUsage(ctx, ten)
	require.NoError(t, err)
	require.Equal(t, int64(limitN), st.Day.Used)
	require.False(t, st.Month.Enabled())

	r, err := l.ReserveUsage(ctx, ten)
	le := limitError(t, err, dispatch.ErrUsageQuotaExceeded)
	require.False(t, r.Held())
	nextDay := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	require.Equal(t, quota.Day, le.Window)
	require.Equal(t, 12*time.Hour, le.RetryAfter)
	h := le.ResponseHeader()
	require.Equal(t, "50", h.Get("X-Usage-Limit"))
	require.Equal(t, "0", h.Get("X-Usage-Remaining"))
	require.Equal(t, unix(nextDay), h.Get("X-Usage-Reset"))
	require.Equal(t, "day", h.Get("X-Usage-Window"))
	require.Equal(t, "43200", h.Get("Retry-After"))
	require.Equal(t, "0", h.Get("X-Usage-Day-Remaining"))
	require.Empty(t, h.Get("X-Usage-Month-Limit"))
}

func testUsageMonth(t *testing.T, s kv.Store) {
	ctx := context.Background()
	clk := NewClock(noon)
	l := newLimiter(t, s, clk, nil)
	ten := newTenant("acme")
	ten.UsageLimit.MonthlyRequests = limitN

	require.Equal(t, limitN, hammer(t, attempts, reserveUsage(l, ten)))
	_, err := l.ReserveUsage(ctx, ten)
	le := limitError(t, err, dispatch.ErrUsageQuotaExceeded)
	monthEnd := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	require.Equal(t, quota.Month, le.Window)
	require.Equal(t, monthEnd.Sub(noon), le.RetryAfter)
	require.Equal(t, "month", le.ResponseHeader().Get("X-Usage-Window"))
	require.Equal(t, unix(monthEnd), le.ResponseHeader().Get("X-Usage-Reset"))
	require.Equal(t, strconv.Itoa(int(monthEnd.Sub(noon)/time.Second)), le.ResponseHeader().Get("Retry-After"))

	// The next day is the same month: still refused.
	clk.Add(24 * time.Hour)
	_, err = l.ReserveUsage(ctx, ten)
	limitError(t, err, dispatch.ErrUsageQuotaExceeded)
}

func testUsageDayAndMonth(t *testing.T, s kv.Store) {
	ctx := context.Background()
	clk := NewClock(noon)
	l := newLimiter(t, s, clk, nil)
	ten := newTenant("acme")
	ten.UsageLimit = tenant.UsageLimit{DailyRequests: limitN, MonthlyRequests: limitN + 20}

	require.Equal(t, limitN, hammer(t, attempts, reserveUsage(l, ten)))
	_, err := l.ReserveUsage(ctx, ten)
	require.Equal(t, quota.Day, limitError(t, err, dispatch.ErrUsageQuotaExceeded).Window)

	clk.Add(24 * time.Hour)
	require.Equal(t, 20, hammer(t, attempts, reserveUsage(l, ten)), "the month caps the second day")
	r, err := l.ReserveUsage(ctx, ten)
	le := limitError(t, err, dispatch.ErrUsageQuotaExceeded)
	require.Equal(t, quota.Month, le.Window)
	require.Equal(t, int64(20), r.Day.Used, "a refusal counts in neither window")
	require.Equal(t, int64(limitN+20), r.Month.Used)
	h := http.Header{}
	r.SetHeaders(h)
	require.Equal(t, "30", h.Get("X-Usage-Day-Remaining"))
	require.Equal(t, "0", h.Get("X-Usage-Month-Remaining"))
	require.Equal(t, unix(time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)), h.Get("X-Usage-Day-Reset"))
	require.Equal(t, unix(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)), h.Get("X-Usage-Month-Reset"))
}

func testUsageRelease(t *testing.T, s kv.Store) {
	ctx := context.Background()
	clk := NewClock(noon)
	l := newLimiter(t, s, clk, nil)
	ten := newTenant("acme")
	ten.UsageLimit = tenant.UsageLimit{DailyRequests: 5, MonthlyRequests: 100}

	var held []quota.UsageReservation
	for i := 0; i < 5; i++ {
		r, err := l.ReserveUsage(ctx, ten)
		require.NoError(t, err)
		require.True(t, r.Held())
		held = append(held, r)
	}
	_, err := l.ReserveUsage(ctx, ten)
	limitError(t, err, dispatch.ErrUsageQuotaExceeded)

	require.NoError(t, held[0].Release(ctx))
	require.NoError(t, held[0].Release(ctx), "a second release does nothing")
	require.NoError(t, held[1].Release(ctx))
	require.Equal(t, int64(3), held[1].Day.Used)
	require.Equal(t, int64(3), held[1].Month.Used)

	require.Equal(t, 2, hammer(t, 100, reserveUsage(l, ten)), "released units come back, exactly")
	st, err := l.PeekUsage(ctx, ten)
	require.NoError(t, err)
	require.Equal(t, int64(5), st.Day.Used)
	require.Equal(t, int64(5), st.Month.Used)
}

func usd(s string) decimal.Decimal { return decimal.RequireFromString(s) }

func testSpendExact(t *testing.T, s kv.Store) {
	ctx := context.Background()
	clk := NewClock(noon)
	l := newLimiter(t, s, clk, nil)
	ten := newTenant("acme")
	ten.X402Enabled, ten.PriceUSD = true, usd("0.01")
	ten.SpendLimit.DailySpendUSD = usd("0.5") // k = 50 prices

	// Every reservation released: all of it comes back.
	got := hammer(t, attempts, func(int) (bool, error) {
		r, err := l.Reserve(ctx, ten, ten.PriceUSD)
		if err != nil {
			return refusal(err, dispatch.ErrSpendCapExceeded)
		}
		return true, r.Release(ctx)
	})
	require.GreaterOrEqual(t, got, limitN)
	st, err := l.PeekSpend(ctx, ten)
	require.NoError(t, err)
	require.Equal(t, int64(0), st.Day.Used, "released reservations come back")

	// Every reservation committed: exactly k.
	var mu sync.Mutex
	var committed []*quota.Reservation
	got = hammer(t, attempts, func(int) (bool, error) {
		r, err := l.Reserve(ctx, ten, ten.PriceUSD)
		if err != nil {
			return refusal(err, dispatch.ErrSpendCapExceeded)
		}
		mu.Lock()
		committed = append(committed, r)
		mu.Unlock()
		return true, r.Commit(ctx)
	})
	require.Equal(t, limitN, got)
	require.Len(t, committed, limitN)
	st, err = l.PeekSpend(ctx, ten)
	require.NoError(t, err)
	require.Equal(t, int64(500_000), st.Day.Used)

	_, err = l.Reserve(ctx, ten, ten.PriceUSD)
	le := limitError(t, err, dispatch.ErrSpendCapExceeded)
	h := le.ResponseHeader()
	require.Equal(t, quota.Day, le.Window)
	require.Equal(t, "0.5", h.Get("X-Spend-Limit"))
	require.Equal(t, "0", h.Get("X-Spend-Remaining"))
	require.Equal(t, "day", h.Get("X-Spend-Window"))
	require.Equal(t, unix(time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)), h.Get("X-Spend-Reset"))
	require.Equal(t, "43200", h.Get("Retry-After"))
	require.Equal(t, "0.5", h.Get("X-Spend-Day-Limit"))
	require.Equal(t, "0", h.Get("X-Spend-Day-Remaining"))
}

func testSpendMonth(t *testing.T, s kv.Store) {
	ctx := context.Background()
	clk := NewClock(noon)
	l := newLimiter(t, s, clk, nil)
	ten := newTenant("acme")
	ten.SpendLimit = tenant.SpendLimit{DailySpendUSD: usd("1"), MonthlySpendUSD: usd("0.3")}
	price := usd("0.01")
	got := hammer(t, attempts, func(int) (bool, error) {
		r, err := l.Reserve(ctx, ten, price)
		if err != nil {
			return refusal(err, dispatch.ErrSpendCapExceeded)
		}
		return true, r.Commit(ctx)
	})
	require.Equal(t, 30, got)
	_, err := l.Reserve(ctx, ten, price)
	le := limitError(t, err, dispatch.ErrSpendCapExceeded)
	require.Equal(t, quota.Month, le.Window)
	require.Equal(t, "0.3", le.ResponseHeader().Get("X-Spend-Limit"))
	require.Equal(t, "0.7", le.ResponseHeader().Get("X-Spend-Day-Remaining"))
	require.Equal(t, unix(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)), le.ResponseHeader().Get("X-Spend-Reset"))
}

func testSpendPartialFit(t *testing.T, s kv.Store) {
	ctx := context.Background()
	clk := NewClock(noon)
	l := newLimiter(t, s, clk, nil)
	ten := newTenant("acme")
	ten.SpendLimit.DailySpendUSD = usd("0.05")
	for i := 0; i < 2; i++ {
		r, err := l.Reserve(ctx, ten, usd("0.02"))
		require.NoError(t, err)
		require.NoError(t, r.Commit(ctx))
		h := http.Header{}
		r.SetHeaders(h)
		require.Equal(t, []string{"0.03", "0.01"}[i], h.Get("X-Spend-Day-Remaining"))
	}
	_, err := l.Reserve(ctx, ten, usd("0.02"))
	le := limitError(t, err, dispatch.ErrSpendCapExceeded)
	require.Equal(t, "0.01", le.ResponseHeader().Get("X-Spend-Remaining"), "a price that does not fit whole is refused")
	r, err := l.Reserve(ctx, ten, usd("0.01"))
	require.NoError(t, err, "a smaller price still fits")
	require.NoError(t, r.Commit(ctx))

	_, err = l.Reserve(ctx, ten, usd("0.0000001"))
	require.Error(t, err, "more than six decimals")
	_, err = l.Reserve(ctx, ten, usd("-1"))
	require.Error(t, err)
}

func testSpendExclusive(t *testing.T, s kv.Store) {
	ctx := context.Background()
	clk := NewClock(noon)
	l := newLimiter(t, s, clk, nil)
	ten := newTenant("acme")
	ten.SpendLimit.DailySpendUSD = usd("100")
	price := usd("1.25")

	r, err := l.Reserve(ctx, ten, price)
	require.NoError(t, err)
	require.True(t, price.Equal(r.Amount()))
	require.NoError(t, r.Commit(ctx))
	require.NoError(t, r.Commit(ctx), "Commit is idempotent")
	require.ErrorIs(t, r.Release(ctx), quota.ErrReservationCommitted)

	r, err = l.Reserve(ctx, ten, price)
	require.NoError(t, err)
	require.NoError(t, r.Release(ctx))
	require.NoError(t, r.Release(ctx), "Release is idempotent")
	require.ErrorIs(t, r.Commit(ctx), quota.ErrReservationReleased)

	st, err := l.PeekSpend(ctx, ten)
	require.NoError(t, err)
	require.Equal(t, int64(1_250_000), st.Day.Used, "one committed, one released")

	// Commit and Release racing on many reservations: exactly one of them
	// wins each, and the counter matches the winners.
	const n = 40
	var wins atomic.Int64
	for i := 0; i < n; i++ {
		r, err := l.Reserve(ctx, ten, price)
		require.NoError(t, err)
		var wg sync.WaitGroup
		var commits, releases atomic.Int64
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				if g%2 == 0 {
					if r.Commit(ctx) == nil {
						commits.Add(1)
					}
				} else if r.Release(ctx) == nil {
					releases.Add(1)
				}
			}(g)
		}
		wg.Wait()
		require.True(t, (commits.Load() == 4) != (releases.Load() == 4), "exactly one kind wins")
		require.True(t, commits.Load() == 0 || releases.Load() == 0)
		if commits.Load() > 0 {
			wins.Add(1)
		}
	}
	st, err = l.PeekSpend(ctx, ten)
	require.NoError(t, err)
	require.Equal(t, (1+wins.Load())*1_250_000, st.Day.Used)
}

func testDayBoundary(t *testing.T, s kv.Store) {
	ctx := context.Background()
	last := time.Date(2026, 11, 24, 23, 59, 59, 999_000_000, time.UTC)
	next := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	clk := NewClock(last)
	l := newLimiter(t, s, clk, nil)
	ten := newTenant("acme")
	ten.UsageLimit.DailyRequests = 3
	ten.SpendLimit.DailySpendUSD = usd("0.03")
	price := usd("0.01")

	for i := 0; i < 3; i++ {
		r, err := l.ReserveUsage(ctx, ten)
		require.NoError(t, err)
		require.Equal(t, "2026-11-24", r.Day.Window.ID)
		require.Equal(t, next, r.Day.Window.End)
		sr, err := l.Reserve(ctx, ten, price)
		require.NoError(t, err)
		require.NoError(t, sr.Commit(ctx))
	}
	_, err := l.ReserveUsage(ctx, ten)
	le := limitError(t, err, dispatch.ErrUsageQuotaExceeded)
	require.Equal(t, time.Millisecond, le.RetryAfter)
	require.Equal(t, "1", le.ResponseHeader().Get("Retry-After"))
	require.Equal(t, unix(next), le.ResponseHeader().Get("X-Usage-Reset"))
	_, err = l.Reserve(ctx, ten, price)
	le = limitError(t, err, dispatch.ErrSpendCapExceeded)
	require.Equal(t, "1", le.ResponseHeader().Get("Retry-After"))
	require.Equal(t, unix(next), le.ResponseHeader().Get("X-Spend-Reset"))

	// The first millisecond of the next day is a new window.
	clk.Set(next)
	require.Equal(t, 3, hammer(t, 60, reserveUsage(l, ten)))
	r, err := l.ReserveUsage(ctx, ten)
	le = limitError(t, err, dispatch.ErrUsageQuotaExceeded)
	require.Equal(t, "2026-11-25", r.Day.Window.ID)
	require.Equal(t, 24*time.Hour, le.RetryAfter)
	require.Equal(t, "86400", le.ResponseHeader().Get("Retry-After"))
	require.Equal(t, unix(next.Add(24*time.Hour)), le.ResponseHeader().Get("X-Usage-Reset"))
	sr, err := l.Reserve(ctx, ten, price)
	require.NoError(t, err)
	require.NoError(t, sr.Commit(ctx))

	// Back in the old day (a replica whose clock is behind) the old
	// window's counters are still there and still full.
	clk.Set(last)
	_, err = l.ReserveUsage(ctx, ten)
	limitError(t, err, dispatch.ErrUsageQuotaExceeded)
}

func testMonthEnds(t *testing.T, s kv.Store) {
	ctx := context.Background()
	date := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }
	tests := []struct {
		name     string
		last     time.Time // the last millisecond of a day
		monthEnd time.Time
		sameNext bool // the next millisecond is still the same month
	}{
		{"november", date(2026, 11, 30), date(2026, 12, 1), false},
		{"year end", date(2026, 12, 31), date(2027, 1, 1), false},
		{"january", date(2027, 1, 31), date(2027, 2, 1), false},
		{"february", date(2027, 2, 28), date(2027, 3, 1), false},
		{"february 28 of a leap year", date(2028, 2, 28), date(2028, 3, 1), true},
		{"february 29 of a leap year", date(2028, 2, 29), date(2028, 3, 1), false},
		{"april", date(2027, 4, 30), date(2027, 5, 1), false},
	}
	for i, tc := range tests {
		last := tc.last.Add(24*time.Hour - time.Millisecond)
		clk := NewClock(last)
		l := newLimiter(t, s, clk, nil)
		ten := newTenant(fmt.Sprintf("month-%d", i))
		ten.UsageLimit.MonthlyRequests = 1
		ten.SpendLimit.MonthlySpendUSD = usd("0.5")
		price := usd("0.5")

		r, err := l.ReserveUsage(ctx, ten)
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.monthEnd, r.Month.Window.End, tc.name)
		require.Equal(t, last.Format("2006-01"), r.Month.Window.ID, tc.name)
		h := http.Header{}
		r.SetHeaders(h)
		require.Equal(t, unix(tc.monthEnd), h.Get("X-Usage-Month-Reset"), tc.name)
		require.Equal(t, "0", h.Get("X-Usage-Month-Remaining"), tc.name)
		sr, err := l.Reserve(ctx, ten, price)
		require.NoError(t, err, tc.name)
		require.NoError(t, sr.Commit(ctx))

		_, err = l.ReserveUsage(ctx, ten)
		le := limitError(t, err, dispatch.ErrUsageQuotaExceeded)
		require.Equal(t, quota.Month, le.Window, tc.name)
		wantWait := tc.monthEnd.Sub(last)
		require.Equal(t, wantWait, le.RetryAfter, tc.name)
		require.Equal(t, strconv.FormatInt(int64((wantWait+time.Second-1)/time.Second), 10), le.ResponseHeader().Get("Retry-After"), tc.name)
		require.Equal(t, unix(tc.monthEnd), le.ResponseHeader().Get("X-Usage-Reset"), tc.name)
		_, err = l.Reserve(ctx, ten, price)
		le = limitError(t, err, dispatch.ErrSpendCapExceeded)
		require.Equal(t, unix(tc.monthEnd), le.ResponseHeader().Get("X-Spend-Reset"), tc.name)
		require.Equal(t, "month", le.ResponseHeader().Get("X-Spend-Window"), tc.name)

		clk.Add(time.Millisecond)
		_, err = l.ReserveUsage(ctx, ten)
		_, serr := l.Reserve(ctx, ten, price)
		if tc.sameNext {
			le = limitError(t, err, dispatch.ErrUsageQuotaExceeded)
			require.Equal(t, tc.monthEnd.Sub(clk.Now()), le.RetryAfter, tc.name)
			require.Equal(t, "86400", le.ResponseHeader().Get("Retry-After"), tc.name)
			limitError(t, serr, dispatch.ErrSpendCapExceeded)
		} else {
			require.NoError(t, err, tc.name)
			require.NoError(t, serr, tc.name)
		}
	}
}
