package quota

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
)

// exchangeKey keys the quota stages' state of one request on the exchange
// (dispatch.Exchange.SetValue).
type exchangeKey struct{}

// exchangeState is what the quota stages tell each other about one
// request. It is only touched by the goroutine running the pipeline.
type exchangeState struct {
	// callerID is the caller the rate-limit stage saw; the payment stage
	// later replaces Exchange.CallerID with the payer, but the per-caller
	// limit stays keyed as the rate-limit stage would have keyed it.
	callerID string
	// ratePending: the rate-limit stage deferred its check to the combined
	// one, which has not run yet.
	ratePending bool
	// usageDone: this request's usage unit is taken care of (counted by the
	// combined check and held by the spend Reservation, or the usage stage
	// already ran), so the usage stage must not count it (again).
	usageDone bool
}

func stateOf(x *dispatch.Exchange) *exchangeState {
	s, _ := x.Value(exchangeKey{}).(*exchangeState)
	return s
}

// hasPayment reports whether h carries an x402 payment header.
func hasPayment(h http.Header) bool {
	return h.Get(x402.HeaderPaymentSignature) != "" || h.Get(x402.HeaderXPayment) != ""
}

func usageLimited(t *tenant.Tenant) bool {
	return t.UsageLimit.DailyRequests > 0 || t.UsageLimit.MonthlyRequests > 0
}

// combined is the outcome of a combined check.
type combined struct {
	rate               rateCheck
	use                UsageStatus
	useDay, useMonth   string // keys of the limited usage windows, else ""
	spend              SpendStatus
	spendDay, spendMon string // keys of the capped spend windows, else ""
}

// checkAll counts, in ONE all-or-none kv.BatchIncrementer.IncrAll, the
// request's rate limits (rate: per caller as callerID, and tenant-wide),
// one unit of usage quota (usage) and amount micro-USD of spend (spend),
// in that order, so that when several would refuse, the one the separate
// stages would have met first is named. Nothing is counted unless
// everything is admitted: a GCRA unit never needs to be given back.
//
// It fills c (the counters after the check, or as they stand when one
// refused) and returns a *LimitError naming the refusing limit, or a
// *StoreError. The limiter must have a batch ability.
func (l *Limiter) checkAll(ctx context.Context, t *tenant.Tenant, callerID string, rate, usage, spend bool, amount int64, c *combined) error {
	now := l.now()
	nowUS := now.UnixMicro()
	cal := l.calendarAt(now, nowUS)
	keys := l.keysFor(cal, t.Slug)

	sc := l.getScratch()
	defer l.putScratch(sc)
	n, nRate := 0, 0
	if rate {
		c.rate = l.rateCheck(t)
		nRate = c.rate.st.n
		c.rate.fill(keys, callerID, nowUS, sc.keys[:], sc.ins[:])
		n = nRate
	}
	var which [maxBatch]*Counter
	var kinds [maxBatch]string
	window := func(kind string, cn *Counter, key string, endUS, delta int64) string {
		if !cn.Enabled() {
			return ""
		}
		sc.keys[n] = key
		sc.ins[n] = kv.Increment{Delta: delta, Max: cn.Limit, TTL: time.Duration(endUS-nowUS)*time.Microsecond + l.slack}
		which[n], kinds[n] = cn, kind
		n++
		return key
	}
	if spend {
		c.spend.Day = Counter{Window: cal.day, Limit: capMicro(t.SpendLimit.DailySpendUSD)}
		c.spend.Month = Counter{Window: cal.month, Limit: capMicro(t.SpendLimit.MonthlySpendUSD)}
		c.spendMon = window(KindSpend, &c.spend.Month, keys.spendMonth, cal.monthEndUS, amount)
		c.spendDay = window(KindSpend, &c.spend.Day, keys.spendDay, cal.dayEndUS, amount)
	}
	if usage {
		c.use.Day = Counter{Window: cal.day, Limit: max(t.UsageLimit.DailyRequests, 0)}
		c.use.Month = Counter{Window: cal.month, Limit: max(t.UsageLimit.MonthlyRequests, 0)}
		c.useMonth = window(KindUsage, &c.use.Month, keys.useMonth, cal.monthEndUS, 1)
		c.useDay = window(KindUsage, &c.use.Day, keys.useDay, cal.dayEndUS, 1)
	}
	refused := -1
	if n > 0 {
		vals, r, err := l.batch.IncrAll(ctx, sc.keys[:n], sc.ins[:n])
		if err != nil {
			return storeError("combined check", err)
		}
		if len(vals) != n {
			return storeError("combined check", errors.New("the store answered a wrong number of values"))
		}
		copy(sc.vals[:n], vals)
		refused = r
	}
	if rate {
		rateRefused := -1
		if refused >= 0 && refused < nRate {
			rateRefused = refused
		}
		c.rate.finish(nowUS, sc.vals[:nRate], rateRefused)
	}
	for i := nRate; i < n; i++ {
		which[i].Used = sc.vals[i]
	}
	switch {
	case refused < 0:
		return nil
	case refused < nRate:
		return l.rateError(&c.rate.st)
	case kinds[refused] == KindUsage:
		return l.usageError(c.use, *which[refused], now)
	default:
		return l.windowError(spendKind, *which[refused], now, formatUSD, c.spend.SetHeaders)
	}
}

// isLimit reports whether err is a refusal (rather than a store failure).
func isLimit(err error) (*LimitError, bool) {
	var le *LimitError
	ok := errors.As(err, &le)
	return le, ok
}

// reserveExchangeCombined is ReserveExchange's one-round-trip path: the
// deferred rate limits (rate), the usage unit (usage) and the spend, in one
// check.
func (l *Limiter) reserveExchangeCombined(ctx context.Context, x *dispatch.Exchange, st *exchangeState, price decimal.Decimal, rate, usage bool) (*Reservation, error) {
	t := x.Tenant
	amount, err := MicroUSD(price)
	if err != nil {
		return nil, err
	}
	st.ratePending = false
	var c combined
	err = l.checkAll(ctx, t, st.callerID, rate, usage, true, amount, &c)
	if err != nil {
		le, ok := isLimit(err)
		if !ok {
			return nil, err // no headers made up from counters never read
		}
		x.Lifecycle = le.Lifecycle()
	}
	if rate {
		c.rate.st.SetHeaders(x.Header)
	}
	if usage {
		c.use.SetHeaders(x.Header)
	}
	c.spend.SetHeaders(x.Header)
	if err != nil {
		return nil, err
	}
	if usage {
		st.usageDone = true
	}
	r := &Reservation{l: l, tenant: t.Slug, price: price, amount: amount, st: c.spend,
		dayKey: c.spendDay, monthKey: c.spendMon, header: x.Header}
	if c.useDay != "" || c.useMonth != "" {
		r.x, r.use, r.useDay, r.useMonth, r.useHeld = x, c.use, c.useDay, c.useMonth, true
	}
	return r, nil
}

// reserveRateAndUsage is the usage stage's combined check for a request
// whose rate check was deferred and that no payment stage checked: the
// rate limits and the usage unit in one round trip.
func (l *Limiter) reserveRateAndUsage(ctx context.Context, x *dispatch.Exchange, st *exchangeState) (UsageReservation, error) {
	st.ratePending = false
	u := UsageReservation{l: l}
	var c combined
	err := l.checkAll(ctx, x.Tenant, st.callerID, true, usageLimited(x.Tenant), false, 0, &c)
	if err != nil {
		if _, ok := isLimit(err); !ok {
			return u, err
		}
	}
	c.rate.st.SetHeaders(x.Header)
	u.UsageStatus = c.use
	u.dayKey, u.monthKey = c.useDay, c.useMonth
	u.held = err == nil && (c.useDay != "" || c.useMonth != "")
	return u, err
}
