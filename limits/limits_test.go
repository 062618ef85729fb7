package limits_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/limits"
)

func TestDefaultPlans(t *testing.T) {
	t.Parallel()
	cases := map[string]limits.Limits{
		"free": {CPUMs: 50, SubRequests: 10}, "pro": {CPUMs: 200, SubRequests: 50},
		"business": {CPUMs: 350, SubRequests: 100}, "enterprise": {CPUMs: 600, SubRequests: 250},
		"quarantine": {CPUMs: 25, SubRequests: 3},
		"PRO":        {CPUMs: 200, SubRequests: 50}, " Enterprise ": {CPUMs: 600, SubRequests: 250},
		"gold": {CPUMs: 50, SubRequests: 10}, "": {CPUMs: 50, SubRequests: 10},
	}
	for plan, want := range cases {
		require.Equal(t, want, limits.ResolveDispatchLimits(plan, limits.Overrides{}), plan)
	}
	require.Equal(t, "pro", limits.Policy{}.NormalizePlan("Pro"))
	require.Equal(t, "free", limits.Policy{}.NormalizePlan("platinum"))
}

func TestOverrides(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		plan  string
		o     limits.Overrides
		raise bool
		want  limits.Limits
	}{
		{"lower both", "pro", limits.Overrides{CPUMs: 100, SubRequests: 5}, false, limits.Limits{CPUMs: 100, SubRequests: 5}},
		{"raise refused", "free", limits.Overrides{CPUMs: 500, SubRequests: 500}, false, limits.Limits{CPUMs: 50, SubRequests: 10}},
		{"raise allowed", "free", limits.Overrides{CPUMs: 500, SubRequests: 500}, true, limits.Limits{CPUMs: 500, SubRequests: 500}},
		{"non-positive falls back", "business", limits.Overrides{CPUMs: -1, SubRequests: 0}, false, limits.Limits{CPUMs: 350, SubRequests: 100}},
		{"one lowered", "enterprise", limits.Overrides{SubRequests: 7}, false, limits.Limits{CPUMs: 600, SubRequests: 7}},
		{"equal to plan", "quarantine", limits.Overrides{CPUMs: 25, SubRequests: 3}, false, limits.Limits{CPUMs: 25, SubRequests: 3}},
	}
	for _, tc := range cases {
		got := limits.Policy{AllowRaise: tc.raise}.Resolve(tc.plan, tc.o)
		require.Equal(t, tc.want, got, tc.name)
	}
}

func TestCustomPlans(t *testing.T) {
	t.Parallel()
	p := limits.Policy{Plans: map[string]limits.Limits{"free": {CPUMs: 1, SubRequests: 1}, "max": {CPUMs: 9, SubRequests: 9}}}
	require.Equal(t, limits.Limits{CPUMs: 9, SubRequests: 9}, p.Resolve("MAX", limits.Overrides{}))
	require.Equal(t, limits.Limits{CPUMs: 1, SubRequests: 1}, p.Resolve("pro", limits.Overrides{}))
	// DefaultPlans is a copy.
	plans := limits.DefaultPlans()
	plans["free"] = limits.Limits{}
	require.Equal(t, 50, limits.ResolveDispatchLimits("free", limits.Overrides{}).CPUMs)
}

func TestCloudflareMappings(t *testing.T) {
	t.Parallel()
	l := limits.ResolveDispatchLimits("pro", limits.Overrides{CPUMs: 150})
	cfg, err := json.Marshal(limits.ToCloudflareConfig(l))
	require.NoError(t, err)
	require.JSONEq(t, `{"cpu_ms":150,"subrequests":50}`, string(cfg))
	bind, err := json.Marshal(limits.ToCloudflareBinding(l))
	require.NoError(t, err)
	require.JSONEq(t, `{"cpuMs":150,"subRequests":50}`, string(bind))
}
