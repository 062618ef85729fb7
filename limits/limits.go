// Package limits holds the platform's plans and works out the per-request
// limits a tenant's worker runs under.
//
// A plan gives a CPU budget in milliseconds and a subrequest budget. A tenant
// may lower either with an override (limits.cpuMs / limits.cpu_ms,
// limits.subRequests / limits.subrequests in the directory); by default it
// cannot raise them above its plan, unless the Policy allows it.
// Non-positive overrides fall back to the plan and fractions are floored.
package limits

import (
	"strings"
)

// Limits are the per-request limits of one worker invocation.
type Limits struct {
	// CPUMs is the CPU budget in milliseconds. The Go fetchers enforce it
	// as a wall-clock budget (see dispatch), since CPU time cannot be
	// metered per goroutine; Cloudflare enforces it as real CPU time.
	CPUMs int `json:"cpuMs"`
	// SubRequests is the number of outbound requests the worker may make.
	SubRequests int `json:"subRequests"`
}

// Plan is a named set of default limits.
type Plan struct {
	Name string
	Limits
}

// Plan names.
const (
	Free       = "free"
	Pro        = "pro"
	Business   = "business"
	Enterprise = "enterprise"
	Quarantine = "quarantine"
)

var defaultPlans = map[string]Limits{
	Free:       {CPUMs: 50, SubRequests: 10},
	Pro:        {CPUMs: 200, SubRequests: 50},
	Business:   {CPUMs: 350, SubRequests: 100},
	Enterprise: {CPUMs: 600, SubRequests: 250},
	Quarantine: {CPUMs: 25, SubRequests: 3},
}

// DefaultPlans returns a copy of the built-in plans, keyed by name.
func DefaultPlans() map[string]Limits {
	out := make(map[string]Limits, len(defaultPlans))
	for k, v := range defaultPlans {
		out[k] = v
	}
	return out
}

// Overrides are a tenant's requested limits. Zero (or negative) fields mean
// "use the plan".
type Overrides struct {
	CPUMs       int `json:"cpuMs,omitempty"`
	SubRequests int `json:"subRequests,omitempty"`
}

// Policy decides how plans and overrides combine. The zero Policy uses the
// default plans and lets overrides only lower limits.
type Policy struct {
	// Plans replaces the default plans when non-nil. Keys are lower-case.
	// A plan named "free" should be present: unknown plans fall back to it.
	Plans map[string]Limits
	// AllowRaise lets overrides raise a limit above the plan.
	AllowRaise bool
}

// NormalizePlan returns the canonical (lower-case) plan name, or "free" when
// the plan is unknown to the policy.
func (p Policy) NormalizePlan(name string) string {
	n := strings.ToLower(strings.TrimSpace(name))
	if _, ok := p.plans()[n]; ok {
		return n
	}
	return Free
}

// PlanLimits returns the limits of the named plan (case-insensitive; unknown
// names are "free").
func (p Policy) PlanLimits(name string) Limits {
	plans := p.plans()
	if l, ok := plans[name]; ok { // the directory keeps plans canonical
		return l
	}
	if l, ok := plans[strings.ToLower(strings.TrimSpace(name))]; ok {
		return l
	}
	return plans[Free]
}

func (p Policy) plans() map[string]Limits {
	if p.Plans != nil {
		return p.Plans
	}
	return defaultPlans
}

// Resolve combines a plan and a tenant's overrides into the limits a request
// runs under.
func (p Policy) Resolve(plan string, o Overrides) Limits {
	base := p.PlanLimits(plan)
	return Limits{
		CPUMs:       p.pick(base.CPUMs, o.CPUMs),
		SubRequests: p.pick(base.SubRequests, o.SubRequests),
	}
}

func (p Policy) pick(plan, override int) int {
	if override <= 0 {
		return plan
	}
	if override > plan && !p.AllowRaise {
		return plan
	}
	return override
}

// ResolveDispatchLimits resolves limits with the default policy: the default
// plans, overrides may only lower a limit.
func ResolveDispatchLimits(plan string, o Overrides) Limits {
	return Policy{}.Resolve(plan, o)
}

// CloudflareConfig is the REST/config form of Workers for Platforms limits:
// {"cpu_ms": N, "subrequests": M}.
type CloudflareConfig struct {
	CPUMs       int `json:"cpu_ms"`
	Subrequests int `json:"subrequests"`
}

// CloudflareBinding is the form the dispatch namespace binding's limits
// option takes: {"cpuMs": N, "subRequests": M}.
type CloudflareBinding struct {
	CPUMs       int `json:"cpuMs"`
	SubRequests int `json:"subRequests"`
}

// ToCloudflareConfig maps limits to the REST/config form.
func ToCloudflareConfig(l Limits) CloudflareConfig {
	return CloudflareConfig{CPUMs: l.CPUMs, Subrequests: l.SubRequests}
}

// ToCloudflareBinding maps limits to the binding's limits option.
func ToCloudflareBinding(l Limits) CloudflareBinding {
	return CloudflareBinding{CPUMs: l.CPUMs, SubRequests: l.SubRequests}
}
