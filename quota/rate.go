package quota

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/tenant"
)

// Rate policy names: LimitError.Window of a rate refusal and the policy
// names of the draft RateLimit headers.
const (
	PolicyCaller = "caller"
	PolicyTenant = "tenant"
	PolicyIP     = "ip"
)

// maxPolicies is the most rate limits one request meets: per caller, per
// client address, and tenant-wide.
const maxPolicies = 3

// gcra is one GCRA rate limit in integer microseconds.
//
// The counter holds the theoretical arrival time (TAT). A request at now
// is admitted when max(TAT, now)+t <= now+burst, and then TAT becomes
// max(TAT, now)+t: exactly one kv.Increment{Floor: now, Delta: t,
// Max: now+burst}. burst is limit·t rather than the window itself, so that
// exactly limit requests fit in a burst even when the window is not a
// multiple of limit microseconds.
type gcra struct {
	limit int64 // requests per window (and the largest burst)
	t     int64 // emission interval, µs
	burst int64 // limit·t, µs
	ttl   time.Duration
}

func newGCRA(r tenant.Rate) gcra {
	ws := r.WindowSeconds
	if ws > maxRateWindow {
		ws = maxRateWindow
	}
	w := ws * 1_000_000
	n := r.Requests
	if n > w {
		n = w // at most one request per microsecond
	}
	t := w / n
	// The TAT never runs more than burst ahead of now, so once the window
	// (and a second for clock skew between replicas) has passed the key
	// holds nothing worth keeping.
	return gcra{limit: n, t: t, burst: n * t, ttl: time.Duration(ws)*time.Second + time.Second}
}

func (g gcra) incr(nowUS int64) kv.Increment {
	return kv.Increment{Floor: nowUS, Delta: g.t, Max: nowUS + g.burst, TTL: g.ttl}
}

// remaining is how many requests would be admitted right now.
func (g gcra) remaining(nowUS, tat int64) int64 {
	if tat < nowUS {
		tat = nowUS
	}
	r := (nowUS + g.burst - tat) / g.t
	return max(0, min(r, g.limit))
}

// wait is how long (µs) until one more request is admitted.
func (g gcra) wait(nowUS, tat int64) int64 {
	if tat < nowUS {
		tat = nowUS
	}
	return max(0, tat+g.t-g.burst-nowUS)
}

// RatePolicy is the state of one rate limit after a check.
type RatePolicy struct {
	// Name is PolicyCaller or PolicyTenant.
	Name string
	// Rate is the limit as configured.
	Rate tenant.Rate
	// Limit is how many requests the policy admits per window (Rate's
	// requests, unless the rate asks for more than one per microsecond).
	Limit int64
	// Remaining is how many more requests it would admit right now.
	Remaining int64
	// ResetAfter is the exact time until the allowance is fully restored;
	// Reset is that instant rounded up to a whole second.
	ResetAfter time.Duration
	Reset      time.Time
}

// RateStatus is the outcome of a rate-limit check. Its summary fields
// (Limit, Remaining, Reset) describe the binding policy: the refusing one,
// else the one with the fewest requests remaining (the per-caller one on a
// tie).
type RateStatus struct {
	Allowed   bool
	Policy    string
	Limit     int64
	Remaining int64
	Reset     time.Time
	// RetryAfter is, for a refusal, the exact time until every policy would
	// admit the request.
	RetryAfter time.Duration

	policies [maxPolicies]RatePolicy
	n        int
	draft    bool
}

// Policies returns the state of each rate limit in force: the per-caller
// one first, then the per-client-address one, then the tenant-wide one. It
// is empty when none is.
func (s *RateStatus) Policies() []RatePolicy { return s.policies[:s.n] }

// SetHeaders sets X-RateLimit-Limit, X-RateLimit-Remaining and
// X-RateLimit-Reset (Unix seconds) on h, and with Config.DraftHeaders the
// draft RateLimit-Policy and RateLimit headers. It sets nothing when no
// rate limit is in force.
func (s *RateStatus) SetHeaders(h http.Header) {
	if s.n == 0 {
		return
	}
	h.Set(HeaderRateLimitLimit, itoa(s.Limit))
	h.Set(HeaderRateLimitRemaining, itoa(s.Remaining))
	h.Set(HeaderRateLimitReset, itoa(s.Reset.Unix()))
	if !s.draft {
		return
	}
	// draft-ietf-httpapi-ratelimit-headers: structured-field lists of
	// policy items, q = quota, w = window (s), r = remaining, t = seconds
	// until the quota is restored.
	var pol, cur []byte
	for i, p := range s.Policies() {
		if i > 0 {
			pol = append(pol, ", "...)
			cur = append(cur, ", "...)
		}
		pol = strconv.AppendQuote(pol, p.Name)
		pol = append(pol, ";q="...)
		pol = strconv.AppendInt(pol, p.Limit, 10)
		pol = append(pol, ";w="...)
		pol = strconv.AppendInt(pol, min(p.Rate.WindowSeconds, maxRateWindow), 10)
		cur = strconv.AppendQuote(cur, p.Name)
		cur = append(cur, ";r="...)
		cur = strconv.AppendInt(cur, p.Remaining, 10)
		cur = append(cur, ";t="...)
		cur = strconv.AppendInt(cur, ceilDuration(p.ResetAfter), 10)
	}
	h.Set(HeaderRateLimitPolicy, string(pol))
	h.Set(HeaderRateLimit, string(cur))
}

// Allow checks and counts one request of callerID (the hashed caller id of
// dispatch.Exchange.CallerID) to t against the per-caller and the
// tenant-wide rate limits. A refused request is not counted by either: a
// GCRA refusal writes nothing, and when the tenant-wide limit refuses a
// request the per-caller limit admitted, the per-caller unit is given back
// (see the package documentation on how exact that is).
//
// A refusal returns the status and a *LimitError wrapping
// dispatch.ErrRateLimited; a store failure returns a *StoreError (wrapping
// dispatch.ErrStoreUnavailable and the store's error).
func (l *Limiter) Allow(ctx context.Context, t *tenant.Tenant, callerID string) (RateStatus, error) {
	return l.allow(ctx, t, callerID, "")
}

// allow is Allow with the per-client-address limit for ipID ("" for none).
func (l *Limiter) allow(ctx context.Context, t *tenant.Tenant, callerID, ipID string) (RateStatus, error) {
	rc := l.rateCheck(t, ipID != "")
	if rc.st.n == 0 {
		return rc.st, nil
	}
	now := l.now()
	nowUS := now.UnixMicro()
	keys := l.keysFor(l.calendarAt(now, nowUS), t.Slug)

	sc := l.getScratch()
	defer l.putScratch(sc)
	rc.fill(keys, callerID, ipID, nowUS, sc.keys[:], sc.ins[:])
	refused, err := l.incrGCRA(ctx, sc, &rc.g, rc.st.n)
	if err != nil {
		return rc.st, storeError("rate limit", err)
	}
	rc.finish(nowUS, sc.vals[:rc.st.n], refused)
	if rc.st.Allowed {
		return rc.st, nil
	}
	return rc.st, l.rateError(&rc.st)
}

// rateCheck is one rate-limit check of a tenant's policies: the GCRA of
// each policy in force and the status being built.
type rateCheck struct {
	g  [maxPolicies]gcra
	st RateStatus
}

// rateCheck returns the policies in force for t (st.n of them), with the
// per-client-address one when withIP.
func (l *Limiter) rateCheck(t *tenant.Tenant, withIP bool) rateCheck {
	rc := rateCheck{st: RateStatus{Allowed: true, draft: l.draft}}
	pc, gl := l.Rates(t)
	if !pc.IsZero() {
		rc.g[rc.st.n] = newGCRA(pc)
		rc.st.policies[rc.st.n] = RatePolicy{Name: PolicyCaller, Rate: pc}
		rc.st.n++
	}
	if ip := l.ipRate(t); withIP && !ip.IsZero() {
		rc.g[rc.st.n] = newGCRA(ip)
		rc.st.policies[rc.st.n] = RatePolicy{Name: PolicyIP, Rate: ip}
		rc.st.n++
	}
	if !gl.IsZero() {
		rc.g[rc.st.n] = newGCRA(gl)
		rc.st.policies[rc.st.n] = RatePolicy{Name: PolicyTenant, Rate: gl}
		rc.st.n++
	}
	return rc
}

// fill puts the keys and increments of the check's policies in keys and
// ins (st.n of each).
func (rc *rateCheck) fill(keys *tenantKeys, callerID, ipID string, nowUS int64, k []string, ins []kv.Increment) {
	for i := 0; i < rc.st.n; i++ {
		switch rc.st.policies[i].Name {
		case PolicyCaller:
			k[i] = keys.callerPrefix + callerID
		case PolicyIP:
			k[i] = keys.ipPrefix + ipID
		default:
			k[i] = keys.rateTenant
		}
		ins[i] = rc.g[i].incr(nowUS)
		// Rate windows are short-lived: a single-node store may keep them
		// off the disk (a crash forgets at most one window).
		ins[i].Volatile = true
	}
}

// finish completes the status from the TATs after the check (the current
// ones when an increment was refused): refused is the index of the refusing
// policy, or -1 when the rate limits admitted the request.
func (rc *rateCheck) finish(nowUS int64, vals []int64, refused int) {
	st := &rc.st
	if st.n == 0 {
		return
	}
	report := 0
	var wait int64
	for i := 0; i < st.n; i++ {
		tat := max(vals[i], nowUS)
		p := &st.policies[i]
		p.Limit = rc.g[i].limit
		p.Remaining = rc.g[i].remaining(nowUS, tat)
		p.ResetAfter = time.Duration(tat-nowUS) * time.Microsecond
		p.Reset = time.Unix(ceilUnix(tat), 0)
		if refused >= 0 {
			wait = max(wait, rc.g[i].wait(nowUS, tat))
		} else if p.Remaining < st.policies[report].Remaining {
			report = i
		}
	}
	if refused >= 0 {
		report = refused
		st.Allowed = false
		st.RetryAfter = time.Duration(wait) * time.Microsecond
	}
	p := st.policies[report]
	st.Policy, st.Limit, st.Remaining, st.Reset = p.Name, p.Limit, p.Remaining, p.Reset
}

// incrGCRA applies the GCRA increments of sc to its keys, all or none, and
// leaves the TATs in sc.vals (current ones on a refusal).
func (l *Limiter) incrGCRA(ctx context.Context, sc *scratch, g *[maxPolicies]gcra, n int) (int, error) {
	if n == 1 {
		return l.incrCounters(ctx, sc, 1)
	}
	if l.batch != nil {
		// One atomic step over every counter: exact, one round trip.
		vals, refused, err := l.batch.IncrAll(ctx, sc.keys[:n], sc.ins[:n])
		if err != nil {
			return -1, err
		}
		copy(sc.vals[:n], vals)
		return refused, nil
	}
	// No batch ability: one policy after the other, giving the earlier
	// units back when a later policy refuses. kv.IncrAll's fallback is not
	// used: its undo assumes plain counters.
	for i := 0; i < n; i++ {
		v, ok, err := l.store.Incr(ctx, sc.keys[i], sc.ins[i])
		if err == nil && ok {
			sc.vals[i] = v
			continue
		}
		var errs []error
		if err != nil {
			errs = append(errs, err)
		}
		for j := i - 1; j >= 0; j-- {
			back, _, berr := l.store.Incr(context.WithoutCancel(ctx), sc.keys[j], kv.Increment{Delta: -g[j].t, Max: kv.Unbounded, TTL: g[j].ttl, Volatile: true})
			if berr != nil {
				errs = append(errs, berr)
			}
			sc.vals[j] = back
		}
		if len(errs) > 0 {
			return -1, errors.Join(errs...)
		}
		sc.vals[i] = v
		for j := i + 1; j < n; j++ { // read the rest, for Retry-After
			r, _, rerr := l.store.Incr(ctx, sc.keys[j], kv.Increment{Max: kv.Unbounded, Volatile: true})
			if rerr != nil {
				return -1, rerr
			}
			sc.vals[j] = r
		}
		return i, nil
	}
	return -1, nil
}

func (l *Limiter) rateError(st *RateStatus) *LimitError {
	p := st.policies[0]
	for _, q := range st.Policies() {
		if q.Name == st.Policy {
			p = q
		}
	}
	who := "per caller"
	switch p.Name {
	case PolicyTenant:
		who = "for the whole API"
	case PolicyIP:
		who = "per client address"
	}
	e := &LimitError{
		Kind:       KindRate,
		Window:     st.Policy,
		Limit:      st.Limit,
		Remaining:  st.Remaining,
		Reset:      st.Reset,
		RetryAfter: st.RetryAfter,
		header:     make(http.Header, 6),
		desc:       fmt.Sprintf("rate limit of %d requests per %ds %s exceeded", p.Rate.Requests, p.Rate.WindowSeconds, who),
	}
	st.SetHeaders(e.header)
	e.header.Set(HeaderRetryAfter, itoa(e.RetryAfterSeconds()))
	return e
}
