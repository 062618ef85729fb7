//go:build unix

// The benchmarks report CPU time per op (getrusage) beside wall time, so
// they build where getrusage exists: every unix.

package dispatch_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/limits"
	"github.com/402claw/dispatcher/tenant"
)

// benchDirectory builds a directory of n tenants over the five plans, each
// with a host of its own and every third with limit overrides.
func benchDirectory(b *testing.B, n int) *tenant.Directory {
	b.Helper()
	plans := []string{"free", "pro", "business", "enterprise", "quarantine"}
	ts := make([]tenant.Tenant, n)
	for i := range ts {
		ts[i] = tenant.Tenant{
			Slug:       fmt.Sprintf("tenant-%05d", i),
			WorkerName: fmt.Sprintf("worker-%05d", i),
			Plan:       plans[i%len(plans)],
			Hosts:      []string{fmt.Sprintf("tenant-%05d.api.402claw.dev", i)},
		}
		if i%3 == 0 {
			ts[i].Limits = limits.Overrides{CPUMs: 40, SubRequests: 5}
		}
	}
	d, err := tenant.NewDirectory(ts)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// BenchmarkResolveLimitsPayload is the per-request work before the stages:
// resolve the tenant in a 10,000-tenant directory (half by /t/<slug>/
// path, half by host), resolve its limits from its plan, and build the
// dispatch payload. Target: under 300 ns/op and at most 2 allocs/op. The
// 10-tenant case is the same work with a directory that fits in L1, as a
// reference for how much of the time is cache misses on the big maps.
func BenchmarkResolveLimitsPayload(b *testing.B) {
	for _, n := range []int{10_000, 10} {
		b.Run(fmt.Sprintf("tenants=%d", n), func(b *testing.B) { benchResolve(b, n) })
	}
}

func benchResolve(b *testing.B, n int) {
	reg := tenant.NewRegistry(benchDirectory(b, n))
	var policy limits.Policy
	// Requests spread over the directory, so map lookups are not all hot.
	type req struct{ host, path, query string }
	reqs := make([]req, 1024)
	for i := range reqs {
		k := (i * 7919) % n
		if i%2 == 0 {
			reqs[i] = req{"gateway.402claw.dev:8402", fmt.Sprintf("/t/tenant-%05d/rows/42", k), "limit=5"}
		} else {
			reqs[i] = req{fmt.Sprintf("tenant-%05d.api.402claw.dev", k), "/rows/42", ""}
		}
	}
	const rid = "6f1c2a4e-8d53-4c3b-9a53-2b8a1c0e7f11"
	var sink dispatch.Payload
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	for i := 0; i < b.N; i++ {
		r := &reqs[i&1023]
		res, err := reg.Load().Resolve(r.host, r.path)
		if err != nil {
			b.Fatal(err)
		}
		lim := policy.Resolve(res.Tenant.Plan, res.Tenant.Limits)
		sink = dispatch.BuildDispatchPayload(res, lim, dispatch.RequestInfo{
			RequestID: rid, Method: "GET", Host: r.host, Query: r.query,
		})
	}
	reportCPU(b, processCPU()-cpu0)
	b.StopTimer()
	if sink.WorkerName == "" {
		b.Fatal("no payload built")
	}
}

// staticFetcher answers every request with the same small body, so that
// BenchmarkDispatch measures the pipeline alone.
type staticFetcher struct{ body []byte }

func (f staticFetcher) Fetch(_ context.Context, _ *http.Request, _ *dispatch.Payload) (*http.Response, error) {
	return dispatch.NewResponse(http.StatusOK, http.Header{"Content-Type": {"application/json"}}, f.body), nil
}

// BenchmarkDispatch is the dispatcher's own cost per request, without
// stages and with a fetcher that answers from memory: request id, tenant
// and limits, caller identity, the outgoing request, the wall-clock context
// and the events.
func BenchmarkDispatch(b *testing.B) {
	reg := tenant.NewRegistry(benchDirectory(b, 10_000))
	d, err := dispatch.NewDispatcher(dispatch.Config{Tenants: reg, Fetcher: staticFetcher{[]byte(`{"ok":true}`)}})
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "http://gateway.402claw.dev/t/tenant-00042/rows?limit=5", nil)
	r.Header.Set("Accept", "application/json")
	r.Header.Set("User-Agent", "bench/1.0")
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	for i := 0; i < b.N; i++ {
		resp := d.Dispatch(r.Context(), r)
		if resp.StatusCode != http.StatusOK {
			b.Fatal(resp.StatusCode)
		}
		resp.Body.Close()
	}
	reportCPU(b, processCPU()-cpu0)
}

// processCPU returns the CPU time the process has used, in nanoseconds.
// On a shared machine ns/op (wall time) moves with the neighbours' load;
// CPU time per op much less.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func reportCPU(b *testing.B, ns int64) {
	b.ReportMetric(float64(ns)/float64(b.N), "cpu-ns/op")
}
