package quota_test

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/tenant"
)

// benchTenant has both rate limits and both usage quotas, all too large to
// refuse during a benchmark.
func benchTenant() *tenant.Tenant {
	return &tenant.Tenant{
		Slug: "bench", WorkerName: "bench-worker", Plan: "pro",
		UsageLimit: tenant.UsageLimit{DailyRequests: 1 << 50, MonthlyRequests: 1 << 50},
		RateLimit: tenant.RateLimit{
			PerCaller: tenant.Rate{Requests: 1 << 30, WindowSeconds: 3600},
			Global:    tenant.Rate{Requests: 1 << 30, WindowSeconds: 3600},
		},
	}
}

// BenchmarkCheck is the full check of one request on the memory adapter:
// per-caller and tenant-wide rate limits, then day and month quota, in
// parallel over all cores, one caller per goroutine.
func BenchmarkCheck(b *testing.B) {
	l, err := quota.New(memory.NewKV(), quota.Config{})
	if err != nil {
		b.Fatal(err)
	}
	ten := benchTenant()
	var id atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		caller := dispatch.HashCaller("caller-" + strconv.FormatInt(id.Add(1), 10))
		for pb.Next() {
			if _, err := l.Allow(ctx, ten, caller); err != nil {
				b.Fatal(err)
			}
			if _, err := l.ReserveUsage(ctx, ten); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkStages runs the metering stage around a no-op next, headers
// included: the quota work of one request in the pipeline.
func BenchmarkStages(b *testing.B) {
	l, err := quota.New(memory.NewKV(), quota.Config{})
	if err != nil {
		b.Fatal(err)
	}
	ten := benchTenant()
	stage := l.Stage()
	ok := &http.Response{StatusCode: http.StatusOK}
	worker := func(ctx context.Context, x *dispatch.Exchange) (*http.Response, error) {
		x.WorkerCalled = true
		return ok, nil
	}
	var id atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		caller := dispatch.HashCaller("caller-" + strconv.FormatInt(id.Add(1), 10))
		for pb.Next() {
			x := &dispatch.Exchange{Tenant: ten, CallerID: caller, Header: make(http.Header, 8)}
			if _, err := stage.Handle(ctx, x, worker); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// nopKV admits everything without storing anything: BenchmarkCheckOverhead
// uses it to measure the quota package's own cost, without a store's.
type nopKV struct{ kv.Store }

func (nopKV) Incr(ctx context.Context, key string, in kv.Increment) (int64, bool, error) {
	return max(in.Floor, 0) + in.Delta, true, nil
}

func (nopKV) IncrAll(ctx context.Context, keys []string, ins []kv.Increment) ([]int64, int, error) {
	vals := make([]int64, len(keys))
	for i, in := range ins {
		vals[i] = max(in.Floor, 0) + in.Delta
	}
	return vals, -1, nil
}

// BenchmarkCheckOverhead is BenchmarkCheck over a store that does nothing:
// the cost of the quota package itself (clock, keys, arithmetic).
func BenchmarkCheckOverhead(b *testing.B) {
	l, err := quota.New(nopKV{}, quota.Config{})
	if err != nil {
		b.Fatal(err)
	}
	ten := benchTenant()
	var id atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		caller := dispatch.HashCaller("caller-" + strconv.FormatInt(id.Add(1), 10))
		for pb.Next() {
			if _, err := l.Allow(ctx, ten, caller); err != nil {
				b.Fatal(err)
			}
			if _, err := l.ReserveUsage(ctx, ten); err != nil {
				b.Fatal(err)
			}
		}
	})
}
