package quota_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/tenant"
)

func Example() {
	now := func() time.Time { return time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC) }
	l, err := quota.New(memory.NewKV(), quota.Config{Now: now})
	if err != nil {
		panic(err)
	}
	acme := &tenant.Tenant{
		Slug: "acme", Plan: "free",
		RateLimit:  tenant.RateLimit{PerCaller: tenant.Rate{Requests: 2, WindowSeconds: 60}},
		UsageLimit: tenant.UsageLimit{DailyRequests: 100},
	}
	ctx := context.Background()
	caller := dispatch.HashCaller("agent:demo")
	for i := 1; i <= 3; i++ {
		st, err := l.Allow(ctx, acme, caller)
		var le *quota.LimitError
		if errors.As(err, &le) {
			fmt.Printf("request %d: 429 %s, Retry-After %s\n", i, le.Kind, le.ResponseHeader().Get("Retry-After"))
			continue
		}
		u, err := l.ReserveUsage(ctx, acme)
		if err != nil {
			panic(err)
		}
		fmt.Printf("request %d: allowed, %d of %d left this minute, %d of %d left today\n",
			i, st.Remaining, st.Limit, u.Day.Remaining(), u.Day.Limit)
	}
	// Output:
	// request 1: allowed, 1 of 2 left this minute, 99 of 100 left today
	// request 2: allowed, 0 of 2 left this minute, 98 of 100 left today
	// request 3: 429 rate, Retry-After 30
}

func ExampleLimiter_Reserve() {
	now := func() time.Time { return time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC) }
	l, _ := quota.New(memory.NewKV(), quota.Config{Now: now})
	paid := &tenant.Tenant{
		Slug: "paid", X402Enabled: true, PriceUSD: decimal.RequireFromString("0.25"),
		SpendLimit: tenant.SpendLimit{DailySpendUSD: decimal.RequireFromString("0.5")},
	}
	ctx := context.Background()

	// A payment that fails after the reservation gives the price back.
	r, _ := l.Reserve(ctx, paid, paid.PriceUSD)
	_ = r.Release(ctx)

	// Two settled payments fill the daily cap.
	for i := 0; i < 2; i++ {
		r, _ := l.Reserve(ctx, paid, paid.PriceUSD)
		_ = r.Commit(ctx)
		h := http.Header{}
		r.SetHeaders(h)
		fmt.Println("X-Spend-Day-Remaining:", h.Get("X-Spend-Day-Remaining"))
	}
	_, err := l.Reserve(ctx, paid, paid.PriceUSD)
	var le *quota.LimitError
	if errors.As(err, &le) {
		h := le.ResponseHeader()
		fmt.Println(errors.Is(err, dispatch.ErrSpendCapExceeded), h.Get("X-Spend-Window"), h.Get("X-Spend-Limit"), h.Get("Retry-After"))
	}
	// Output:
	// X-Spend-Day-Remaining: 0.25
	// X-Spend-Day-Remaining: 0
	// true day 0.5 43200
}
