package quotatest

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/tenant"
)

// Benchmark measures the full quota check of one free request on a store:
// per-caller and tenant-wide rate limits, then the day and month usage
// quota, serially and in parallel. Every adapter runs it, so the cost of a
// check can be compared across stores.
func Benchmark(b *testing.B, newStore func(b *testing.B) kv.Store) {
	t := &tenant.Tenant{
		Slug: "bench", WorkerName: "bench-worker", Plan: "pro",
		UsageLimit: tenant.UsageLimit{DailyRequests: 1 << 50, MonthlyRequests: 1 << 50},
		RateLimit: tenant.RateLimit{
			PerCaller: tenant.Rate{Requests: 1 << 30, WindowSeconds: 3600},
			Global:    tenant.Rate{Requests: 1 << 30, WindowSeconds: 3600},
		},
	}
	check := func(b *testing.B, l *quota.Limiter, caller string) {
		ctx := context.Background()
		if _, err := l.Allow(ctx, t, caller); err != nil {
			b.Fatal(err)
		}
		if _, err := l.ReserveUsage(ctx, t); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("Check", func(b *testing.B) {
		l, err := quota.New(newStore(b), quota.Config{})
		if err != nil {
			b.Fatal(err)
		}
		caller := dispatch.HashCaller("caller")
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			check(b, l, caller)
		}
	})
	b.Run("CheckParallel", func(b *testing.B) {
		l, err := quota.New(newStore(b), quota.Config{})
		if err != nil {
			b.Fatal(err)
		}
		var id atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			caller := dispatch.HashCaller("caller-" + strconv.FormatInt(id.Add(1), 10))
			for pb.Next() {
				check(b, l, caller)
			}
		})
	})
}
