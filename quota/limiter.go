package quota

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/limits"
	"github.com/402claw/dispatcher/tenant"
)

// PlanRates are the rate limits a plan gives tenants that set none. A zero
// Rate means "no such limit".
type PlanRates struct {
	// PerCaller limits each caller of a tenant.
	PerCaller tenant.Rate
	// Global limits all callers of a tenant together.
	Global tenant.Rate
	// PerIP limits each client address, whatever caller identities it
	// asserts (X-Agent-Id, X-Caller-Id, API keys cost nothing to rotate).
	// It applies only beside an asserted identity: a caller known by its
	// address already meets PerCaller. A tenant that sets its own
	// rateLimit.perCaller gets five times that rate per address instead.
	PerIP tenant.Rate
}

func perMinute(n int64) tenant.Rate { return tenant.Rate{Requests: n, WindowSeconds: 60} }

var defaultPlans = map[string]PlanRates{
	limits.Free:       {PerCaller: perMinute(60), Global: perMinute(600), PerIP: perMinute(300)},
	limits.Pro:        {PerCaller: perMinute(300), Global: perMinute(3_000), PerIP: perMinute(1_500)},
	limits.Business:   {PerCaller: perMinute(1_200), Global: perMinute(12_000), PerIP: perMinute(6_000)},
	limits.Enterprise: {PerCaller: perMinute(6_000), Global: perMinute(60_000), PerIP: perMinute(30_000)},
	limits.Quarantine: {PerCaller: perMinute(10), Global: perMinute(60), PerIP: perMinute(30)},
}

// DefaultPlans returns a copy of the built-in plan rates, keyed by plan
// name (see the package documentation for the table).
func DefaultPlans() map[string]PlanRates {
	out := make(map[string]PlanRates, len(defaultPlans))
	for k, v := range defaultPlans {
		out[k] = v
	}
	return out
}

// DefaultSlack is how long usage and spend counters outlive their window,
// so that a replica whose clock is a little behind still finds the counter
// of the window it believes in, and a late Release still finds its counter.
const DefaultSlack = time.Hour

// DefaultPrefix is the key prefix when Config.Prefix is empty.
const DefaultPrefix = "q"

// maxRateWindow bounds a rate window so that its arithmetic in microseconds
// cannot overflow; longer windows are shortened to it.
const maxRateWindow = 366 * 24 * 60 * 60

// Config configures a Limiter. Every field has a working zero value.
type Config struct {
	// Now is the clock (nil: time.Now). Windows, GCRA arrival times and
	// every Reset and Retry-After derive from it; key expiry follows the
	// store's own clock.
	Now func() time.Time
	// Plans gives the default rate limits per plan (nil: DefaultPlans()).
	// Keys are lower-case plan names. A tenant whose plan is not listed gets
	// the "free" entry, or the built-in free rates when there is none.
	Plans map[string]PlanRates
	// DraftHeaders adds the IETF draft RateLimit-Policy and RateLimit
	// headers (draft-ietf-httpapi-ratelimit-headers) to the X-RateLimit-*
	// ones.
	DraftHeaders bool
	// Prefix starts every key (empty: DefaultPrefix). It must not contain
	// '{' or '}', which would change the keys' Redis Cluster hash tag.
	Prefix string
	// Slack is how long usage and spend counters live past the end of
	// their window (zero: DefaultSlack).
	Slack time.Duration
}

// Limiter enforces rate limits, usage quotas and spend caps over a kv.Store.
// It is safe for concurrent use; all its state lives in the store, so
// several Limiters (several gateway replicas) over one store enforce one set
// of limits exactly.
type Limiter struct {
	store  kv.Store
	batch  kv.BatchIncrementer // nil when the store has no batch ability
	now    func() time.Time
	plans  map[string]PlanRates
	free   PlanRates
	draft  bool
	prefix string
	slack  time.Duration
	cal    atomic.Pointer[calendar]
	pool   sync.Pool // *scratch
}

// scratch holds the per-call arrays of the hot path: slices of them go to
// the store's interface methods, where local arrays would escape to the
// heap on every call.
type scratch struct {
	keys [maxBatch]string
	ins  [maxBatch]kv.Increment
	vals [maxBatch]int64
}

// maxBatch is the most counters one check touches: three rate limits, two
// usage windows and two spend windows.
const maxBatch = 7

// New returns a Limiter over store.
func New(store kv.Store, cfg Config) (*Limiter, error) {
	if store == nil {
		return nil, errors.New("quota: a kv.Store is required")
	}
	l := &Limiter{store: store, now: cfg.Now, draft: cfg.DraftHeaders, prefix: cfg.Prefix, slack: cfg.Slack}
	l.batch, _ = store.(kv.BatchIncrementer)
	if l.now == nil {
		l.now = time.Now
	}
	if l.prefix == "" {
		l.prefix = DefaultPrefix
	}
	if strings.ContainsAny(l.prefix, "{}") {
		return nil, fmt.Errorf("quota: Config.Prefix %q must not contain '{' or '}'", l.prefix)
	}
	if l.slack <= 0 {
		l.slack = DefaultSlack
	}
	plans := cfg.Plans
	if plans == nil {
		plans = defaultPlans
	}
	l.plans = make(map[string]PlanRates, len(plans))
	for name, p := range plans {
		if name != strings.ToLower(name) {
			return nil, fmt.Errorf("quota: plan name %q must be lower-case", name)
		}
		for what, r := range map[string]tenant.Rate{"PerCaller": p.PerCaller, "Global": p.Global, "PerIP": p.PerIP} {
			if r.Requests < 0 || r.WindowSeconds < 0 || (r.Requests == 0) != (r.WindowSeconds == 0) {
				return nil, fmt.Errorf("quota: plan %q: %s %+v must be zero or have positive requests and windowSeconds", name, what, r)
			}
		}
		l.plans[name] = p
	}
	l.free = defaultPlans[limits.Free]
	if p, ok := l.plans[limits.Free]; ok {
		l.free = p
	}
	l.pool.New = func() any { return new(scratch) }
	return l, nil
}

// Rates returns the rate limits in force for t: the tenant's own
// rateLimit.perCaller and rateLimit.global where set, else its plan's.
// A zero Rate means that limit is off.
func (l *Limiter) Rates(t *tenant.Tenant) (perCaller, global tenant.Rate) {
	p, ok := l.plans[t.Plan]
	if !ok {
		if p, ok = l.plans[strings.ToLower(t.Plan)]; !ok {
			p = l.free
		}
	}
	perCaller, global = p.PerCaller, p.Global
	if !t.RateLimit.PerCaller.IsZero() {
		perCaller = t.RateLimit.PerCaller
	}
	if !t.RateLimit.Global.IsZero() {
		global = t.RateLimit.Global
	}
	if perCaller.IsZero() {
		perCaller = tenant.Rate{}
	}
	if global.IsZero() {
		global = tenant.Rate{}
	}
	return perCaller, global
}

// ipRate is the per-client-address limit for t (see PlanRates.PerIP).
func (l *Limiter) ipRate(t *tenant.Tenant) tenant.Rate {
	if pc := t.RateLimit.PerCaller; !pc.IsZero() {
		return tenant.Rate{Requests: pc.Requests * 5, WindowSeconds: pc.WindowSeconds}
	}
	return l.planOf(t).PerIP
}

func (l *Limiter) planOf(t *tenant.Tenant) PlanRates {
	p, ok := l.plans[t.Plan]
	if !ok {
		if p, ok = l.plans[strings.ToLower(t.Plan)]; !ok {
			p = l.free
		}
	}
	return p
}

func (l *Limiter) getScratch() *scratch { return l.pool.Get().(*scratch) }

func (l *Limiter) putScratch(sc *scratch) {
	sc.keys = [maxBatch]string{} // do not keep key text alive in the pool
	l.pool.Put(sc)
}

// tenantKeys are the keys of one tenant for one UTC day. Every key starts
// with "<prefix>:{<slug>}:": the braces make the slug the Redis Cluster hash
// tag, so all keys of a tenant live in one slot and can be updated in one
// IncrAll.
type tenantKeys struct {
	callerPrefix string // "<prefix>:{<slug>}:rate:c:", followed by the caller id
	ipPrefix     string // "<prefix>:{<slug>}:rate:ip:", followed by the hashed address
	rateTenant   string
	useMonth     string
	useDay       string
	spendMonth   string
	spendDay     string
}

// keysFor returns the keys of slug for the day of cal, built once per
// tenant and day so that the hot path allocates no key text but the
// caller's.
func (l *Limiter) keysFor(cal *calendar, slug string) *tenantKeys {
	if v, ok := cal.keys.Load(slug); ok {
		return v.(*tenantKeys)
	}
	tag := l.prefix + ":{" + slug + "}:"
	k := &tenantKeys{
		callerPrefix: tag + "rate:c:",
		ipPrefix:     tag + "rate:ip:",
		rateTenant:   tag + "rate:t",
		useMonth:     tag + "use:m:" + cal.month.ID,
		useDay:       tag + "use:d:" + cal.day.ID,
		spendMonth:   tag + "spend:m:" + cal.month.ID,
		spendDay:     tag + "spend:d:" + cal.day.ID,
	}
	v, _ := cal.keys.LoadOrStore(slug, k)
	return v.(*tenantKeys)
}

// incrCounters applies sc.ins[:n] to sc.keys[:n] all or none and leaves the
// counters' values in sc.vals[:n]: after the increments when they were
// applied, the current values when one was refused. It returns the index of
// the refused increment, or -1. It is for plain counters (quotas, spend),
// whose undo is a subtraction.
func (l *Limiter) incrCounters(ctx context.Context, sc *scratch, n int) (int, error) {
	if n == 1 {
		v, ok, err := l.store.Incr(ctx, sc.keys[0], sc.ins[0])
		if err != nil {
			return -1, err
		}
		sc.vals[0] = v
		if !ok {
			return 0, nil
		}
		return -1, nil
	}
	vals, refused, err := kv.IncrAll(ctx, l.store, sc.keys[:n], sc.ins[:n])
	if err != nil {
		return -1, err
	}
	copy(sc.vals[:n], vals)
	if refused >= 0 && l.batch == nil {
		// The one-by-one fallback reports applied-then-undone values for
		// the keys before the refused one and nothing after it: read them.
		for i := 0; i < n; i++ {
			if i == refused {
				continue
			}
			v, _, err := l.store.Incr(ctx, sc.keys[i], kv.Increment{Max: kv.Unbounded})
			if err != nil {
				return -1, err
			}
			sc.vals[i] = v
		}
	}
	return refused, nil
}

// readCounters reads the counters at keys (Delta 0 increments) into vals.
func (l *Limiter) readCounters(ctx context.Context, keys []string, vals []int64) error {
	if len(keys) == 0 {
		return nil
	}
	ins := make([]kv.Increment, len(keys))
	for i := range ins {
		ins[i] = kv.Increment{Max: kv.Unbounded}
	}
	got, _, err := kv.IncrAll(ctx, l.store, keys, ins)
	if err != nil {
		return err
	}
	copy(vals, got)
	return nil
}

// giveBack subtracts deltas from counters whose window ends at the given
// Unix microseconds, keeping their expiry at the window end plus slack. A
// counter whose window (and slack) is over is left alone: its key is gone
// or about to be, and a negative increment would re-create it without an
// expiry. It returns the values after the subtraction (-1 for skipped keys).
func (l *Limiter) giveBack(ctx context.Context, keys []string, deltas []int64, endsUS []int64) ([]int64, error) {
	nowUS := l.now().UnixMicro()
	k := make([]string, 0, len(keys))
	ins := make([]kv.Increment, 0, len(keys))
	idx := make([]int, 0, len(keys))
	for i := range keys {
		ttl := time.Duration(endsUS[i]-nowUS)*time.Microsecond + l.slack
		if deltas[i] <= 0 || ttl <= 0 {
			continue
		}
		k = append(k, keys[i])
		ins = append(ins, kv.Increment{Delta: -deltas[i], Max: kv.Unbounded, TTL: ttl})
		idx = append(idx, i)
	}
	out := make([]int64, len(keys))
	for i := range out {
		out[i] = -1
	}
	if len(k) == 0 {
		return out, nil
	}
	vals, _, err := kv.IncrAll(context.WithoutCancel(ctx), l.store, k, ins)
	if err != nil {
		return nil, err
	}
	for j, i := range idx {
		out[i] = vals[j]
	}
	return out, nil
}
