package quota_test

import (
	"context"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/meter"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/quota/quotatest"
	"github.com/402claw/dispatcher/tenant"
)

func usd(s string) decimal.Decimal { return decimal.RequireFromString(s) }

// Finding 3: rotating X-Agent-Id from one address does not multiply the
// allowance: the per-client-address limit stands beside the asserted
// identity, and exactly its rate is admitted under many goroutines.
func TestPerClientAddressLimitBesideAssertedIdentities(t *testing.T) {
	t.Parallel()
	l, err := quota.New(memory.NewKV(), quota.Config{Now: quotatest.NewClock(noon).Now})
	require.NoError(t, err)
	ten := &tenant.Tenant{Slug: "acme", Plan: "free"} // per caller 60/min, per address 300/min
	ip := netip.MustParseAddr("203.0.113.9")
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 20; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				caller := dispatch.HashCaller("agent:rotating-" + string(rune('a'+g)) + string(rune('a'+i%26)) + string(rune('a'+i/26)))
				_, err := l.Admit(context.Background(), meter.Params{Tenant: ten, CallerID: caller, ClientIP: ip, Rate: true})
				if err == nil {
					ok.Add(1)
				} else {
					require.ErrorIs(t, err, dispatch.ErrRateLimited)
					refused.Add(1)
				}
			}
		}(g)
	}
	wg.Wait()
	require.Equal(t, int64(300), ok.Load(), "one address gets its plan's 300 per minute, whatever ids it asserts")
	require.Equal(t, int64(700), refused.Load())

	// Another address is not affected, and a caller known only by its
	// address meets the per-caller limit alone.
	other := netip.MustParseAddr("198.51.100.1")
	h, err := l.Admit(context.Background(), meter.Params{Tenant: ten, CallerID: dispatch.HashCaller("ip:" + other.String()), ClientIP: other, Rate: true})
	require.NoError(t, err)
	hd := http.Header{}
	h.SetHeaders(hd)
	require.Equal(t, "59", hd.Get("X-RateLimit-Remaining"))
}

// A usage-priced request holds its maximum and keeps only its charge.
func TestHoldCommitsTheChargeAndGivesBackTheRest(t *testing.T) {
	t.Parallel()
	l, err := quota.New(memory.NewKV(), quota.Config{Now: quotatest.NewClock(noon).Now})
	require.NoError(t, err)
	ten := &tenant.Tenant{Slug: "llm", X402Enabled: true, PriceUSD: usd("0.01"),
		UsageLimit: tenant.UsageLimit{DailyRequests: 10},
		SpendLimit: tenant.SpendLimit{DailySpendUSD: usd("1")}}
	ctx := context.Background()
	h, err := l.Admit(ctx, meter.Params{Tenant: ten, CallerID: "c", Rate: true, Usage: true, Spend: usd("0.5")})
	require.NoError(t, err)
	hd := http.Header{}
	h.SetHeaders(hd)
	require.Equal(t, "0.5", hd.Get("X-Spend-Day-Remaining"), "the maximum is held")
	require.NoError(t, h.Commit(ctx, usd("0.123")))
	require.NoError(t, h.Commit(ctx, usd("0.2")), "a second commit is a no-op")
	require.ErrorIs(t, h.Release(ctx), quota.ErrReservationCommitted)
	st, err := l.PeekSpend(ctx, ten)
	require.NoError(t, err)
	require.Equal(t, int64(123_000), st.Day.Used, "only the charge stays counted")
	u, err := l.PeekUsage(ctx, ten)
	require.NoError(t, err)
	require.Equal(t, int64(1), u.Day.Used)

	// A released hold gives back the unit and the whole amount.
	h, err = l.Admit(ctx, meter.Params{Tenant: ten, CallerID: "c", Rate: true, Usage: true, Spend: usd("0.5")})
	require.NoError(t, err)
	require.NoError(t, h.Release(ctx))
	require.ErrorIs(t, h.Commit(ctx, usd("0.5")), quota.ErrReservationReleased)
	st, _ = l.PeekSpend(ctx, ten)
	u, _ = l.PeekUsage(ctx, ten)
	require.Equal(t, int64(123_000), st.Day.Used)
	require.Equal(t, int64(1), u.Day.Used)
}

// A paid request's counters (rate, usage, spend) are one store round trip,
// and a refusal counts nothing but headers.
func TestAdmitIsOneRoundTrip(t *testing.T) {
	t.Parallel()
	store := &countingKV{KV: memory.NewKV()}
	l, err := quota.New(store, quota.Config{Now: quotatest.NewClock(noon).Now})
	require.NoError(t, err)
	ten := &tenant.Tenant{Slug: "p", X402Enabled: true, PriceUSD: usd("0.01"),
		UsageLimit: tenant.UsageLimit{DailyRequests: 1}, SpendLimit: tenant.SpendLimit{DailySpendUSD: usd("1")}}
	_, err = l.Admit(context.Background(), meter.Params{Tenant: ten, CallerID: "c", ClientIP: netip.MustParseAddr("192.0.2.1"), Rate: true, Usage: true, Spend: usd("0.01")})
	require.NoError(t, err)
	require.Equal(t, int64(1), store.calls.Load())
	h, err := l.Admit(context.Background(), meter.Params{Tenant: ten, CallerID: "c", Rate: true, Usage: true, Spend: usd("0.01")})
	require.ErrorIs(t, err, dispatch.ErrUsageQuotaExceeded)
	require.NotNil(t, h, "a refusal still carries the headers of what was read")
	hd := http.Header{}
	h.SetHeaders(hd)
	require.Equal(t, "0", hd.Get("X-Usage-Day-Remaining"))
	require.Equal(t, "0.99", hd.Get("X-Spend-Day-Remaining"), "nothing of the refused request was counted")
	require.Equal(t, int64(2), store.calls.Load())
}

// Review finding: an IPv6 client holds a /64; rotating addresses inside it
// (and ids) does not multiply the per-address allowance.
func TestPerAddressLimitCountsIPv6Slash64(t *testing.T) {
	t.Parallel()
	l, err := quota.New(memory.NewKV(), quota.Config{Now: quotatest.NewClock(noon).Now})
	require.NoError(t, err)
	ten := &tenant.Tenant{Slug: "acme", Plan: "quarantine"} // per address 30/min
	ok := 0
	for i := 0; i < 100; i++ {
		ip := netip.MustParseAddr("2001:db8:1:2::" + strconv.FormatInt(int64(i+1), 16))
		if _, err := l.Admit(context.Background(), meter.Params{Tenant: ten, CallerID: dispatch.HashCaller("agent:" + strconv.Itoa(i)), ClientIP: ip, Rate: true}); err == nil {
			ok++
		}
	}
	require.Equal(t, 30, ok, "one /64, one allowance")
}
