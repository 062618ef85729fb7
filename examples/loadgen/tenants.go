package main

import (
	"encoding/json"
	"fmt"

	"github.com/shopspring/decimal"
)

// tenantSpec is one generated tenant, in the registry form of the tenant
// directory ({"tenants":[...]}) that the example server's -tenants reads.
type tenantSpec struct {
	Slug        string          `json:"slug"`
	WorkerName  string          `json:"workerName"`
	Plan        string          `json:"plan"`
	PriceUSD    string          `json:"priceUsd,omitempty"`
	X402Enabled bool            `json:"x402Enabled"`
	Directory   string          `json:"directory,omitempty"`
	OwnerUserID string          `json:"ownerUserId,omitempty"`
	UsageLimit  *usageLimitSpec `json:"usageLimit,omitempty"`
	SpendLimit  *spendLimitSpec `json:"spendLimit,omitempty"`
	RateLimit   *rateLimitSpec  `json:"rateLimit,omitempty"`
	Limits      map[string]int  `json:"limits,omitempty"`
	Routes      []routeSpec     `json:"routes,omitempty"`

	// profile names the tenant's test role, for the report.
	profile string
	// channel marks a tenant of the channel traffic (channels.go), which
	// the mixed workload leaves alone.
	channel bool
}

// routeSpec is one priced route of a tenant (DESIGN section 13).
type routeSpec struct {
	Method      string   `json:"method,omitempty"`
	Path        string   `json:"path"`
	PriceUSD    string   `json:"priceUsd"`
	MaxPriceUSD string   `json:"maxPriceUsd,omitempty"`
	Schemes     []string `json:"schemes,omitempty"`
}

type usageLimitSpec struct {
	DailyRequests   int `json:"dailyRequests,omitempty"`
	MonthlyRequests int `json:"monthlyRequests,omitempty"`
}

type spendLimitSpec struct {
	DailySpendUSD   string `json:"dailySpendUsd,omitempty"`
	MonthlySpendUSD string `json:"monthlySpendUsd,omitempty"`
}

type rateSpec struct {
	Requests      int `json:"requests"`
	WindowSeconds int `json:"windowSeconds"`
}

type rateLimitSpec struct {
	PerCaller *rateSpec `json:"perCaller,omitempty"`
}

// Worker names the generated tenants use; main maps them to the harness's
// own upstream servers (see upstream.go).
const (
	workerHealthy = "loadgen-healthy"
	workerFlaky   = "loadgen-flaky"
)

// paid reports whether the gateway charges for the tenant's requests.
func (t *tenantSpec) paid() bool {
	return t.X402Enabled && t.PriceUSD != "" && !decimal.RequireFromString(t.PriceUSD).IsZero()
}

// tightRate reports whether the tenant has a per-caller rate limit.
func (t *tenantSpec) tightRate() bool { return t.RateLimit != nil && t.RateLimit.PerCaller != nil }

// genTenants builds the tenant directory of one run: nFree free and nPaid
// paid tenants whose slugs start with prefix, cycling through profiles so
// every kind of limit is hit within a short run:
//
//	free: plain (flaky worker) | tight per-caller rate | small daily quota |
//	      small monthly quota | short wall-clock budget (slow worker -> 504)
//	paid: plain | small daily spend cap | small daily quota |
//	      small monthly spend cap + tight rate | cheap, healthy worker
//
// Quotas and caps are small on purpose: the run must reach them.
func genTenants(prefix string, nFree, nPaid int) []*tenantSpec {
	var out []*tenantSpec
	for i := 0; i < nFree; i++ {
		t := &tenantSpec{
			Slug: fmt.Sprintf("%s-free-%d", prefix, i), WorkerName: workerFlaky, Plan: "free",
			Directory: "data", OwnerUserID: fmt.Sprintf("owner-%d", i%3),
		}
		switch i % 5 {
		case 0:
			t.profile = "plain"
		case 1:
			t.profile = "rate 5/s per caller"
			t.RateLimit = &rateLimitSpec{PerCaller: &rateSpec{Requests: 5, WindowSeconds: 1}}
		case 2:
			t.profile = "daily quota 120"
			t.UsageLimit = &usageLimitSpec{DailyRequests: 120}
			t.WorkerName = workerHealthy
		case 3:
			t.profile = "monthly quota 60"
			t.UsageLimit = &usageLimitSpec{DailyRequests: 1000, MonthlyRequests: 60}
		case 4:
			t.profile = "cpuMs 3 (300ms wall clock)"
			t.Plan = "pro"
			t.Limits = map[string]int{"cpuMs": 3}
		}
		out = append(out, t)
	}
	for i := 0; i < nPaid; i++ {
		t := &tenantSpec{
			Slug: fmt.Sprintf("%s-paid-%d", prefix, i), WorkerName: workerFlaky, Plan: "pro",
			X402Enabled: true, PriceUSD: "0.01", Directory: "finance", OwnerUserID: fmt.Sprintf("owner-%d", i%3),
		}
		switch i % 5 {
		case 0:
			t.profile = "plain $0.01"
		case 1:
			t.profile = "daily spend cap $0.10"
			t.SpendLimit = &spendLimitSpec{DailySpendUSD: "0.10"}
		case 2:
			t.profile = "daily quota 25, $0.002"
			t.PriceUSD = "0.002"
			t.UsageLimit = &usageLimitSpec{DailyRequests: 25}
		case 3:
			t.profile = "monthly spend cap $0.25, rate 3/s, $0.05"
			t.PriceUSD = "0.05"
			t.SpendLimit = &spendLimitSpec{DailySpendUSD: "1", MonthlySpendUSD: "0.25"}
			t.RateLimit = &rateLimitSpec{PerCaller: &rateSpec{Requests: 3, WindowSeconds: 1}}
		case 4:
			t.profile = "healthy worker $0.001"
			t.PriceUSD = "0.001"
			t.WorkerName = workerHealthy
		}
		out = append(out, t)
	}
	return out
}

// genChannelTenants builds n tenants whose route GET /ch/* is priced over
// a batch-settlement payment channel (at most channelMaxUSD per request,
// the worker reporting the charge) and served by the flaky worker, so
// that failed and reset worker answers leave vouchers unused. They have
// no quota or spend cap: the channel invariants are about the money.
func genChannelTenants(prefix string, n int) []*tenantSpec {
	var out []*tenantSpec
	for i := 0; i < n; i++ {
		out = append(out, &tenantSpec{
			Slug: fmt.Sprintf("%s-chan-%d", prefix, i), WorkerName: workerFlaky, Plan: "pro",
			X402Enabled: true, PriceUSD: "0.01", Directory: "finance", OwnerUserID: fmt.Sprintf("owner-%d", i%3),
			Routes:  []routeSpec{{Method: "GET", Path: channelRoute, PriceUSD: "0", MaxPriceUSD: channelMaxUSD, Schemes: []string{"batch-settlement"}}},
			profile: "channel route, up to $" + channelMaxUSD + " a request", channel: true,
		})
	}
	return out
}

// directoryJSON renders the registry form of the directory.
func directoryJSON(ts []*tenantSpec) ([]byte, error) {
	return json.MarshalIndent(struct {
		Tenants []*tenantSpec `json:"tenants"`
	}{ts}, "", "  ")
}

// limitsOf extracts what the invariant checker needs to know of a tenant.
func limitsOf(t *tenantSpec) tenantLimits {
	l := tenantLimits{Paid: t.paid(), ExactQuota: !t.paid() && t.WorkerName == workerHealthy}
	if t.PriceUSD != "" {
		l.Price = decimal.RequireFromString(t.PriceUSD)
	}
	if u := t.UsageLimit; u != nil {
		l.DailyRequests, l.MonthlyRequests = u.DailyRequests, u.MonthlyRequests
	}
	if s := t.SpendLimit; s != nil {
		if s.DailySpendUSD != "" {
			l.DailySpend = decimal.RequireFromString(s.DailySpendUSD)
		}
		if s.MonthlySpendUSD != "" {
			l.MonthlySpend = decimal.RequireFromString(s.MonthlySpendUSD)
		}
	}
	return l
}
