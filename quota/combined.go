package quota

import (
	"context"
	"errors"
	"time"

	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/tenant"
)

func usageLimited(t *tenant.Tenant) bool {
	return t.UsageLimit.DailyRequests > 0 || t.UsageLimit.MonthlyRequests > 0
}

func spendCapped(t *tenant.Tenant) bool {
	return t.SpendLimit.DailySpendUSD.IsPositive() || t.SpendLimit.MonthlySpendUSD.IsPositive()
}

// mode says what a combined check does with a kind of counter.
type mode int

const (
	skip  mode = iota // leave the counters alone
	peek              // read them, for the headers
	count             // count against them
)

// combined is the outcome of a combined check.
type combined struct {
	rate               rateCheck
	rateOn             bool
	use                UsageStatus
	useDay, useMonth   string // keys of the limited usage windows, else ""
	useMode            mode
	spend              SpendStatus
	spendDay, spendMon string // keys of the capped spend windows, else ""
	spendMode          mode
}

// checkAll counts, in ONE all-or-none kv.BatchIncrementer.IncrAll, the
// request's rate limits (rate: per caller as callerID, per client address
// as ipID when not "", and tenant-wide), one unit of usage quota and amount
// micro-USD of spend, in that order, so that when several would refuse,
// the one met first is named; peeked windows are read in the same round
// trip. Nothing is counted unless everything is admitted: a GCRA unit never
// needs to be given back.
//
// It fills c (the counters after the check, or as they stand when one
// refused) and returns a *LimitError naming the refusing limit, or a
// *StoreError. The limiter must have a batch ability.
func (l *Limiter) checkAll(ctx context.Context, t *tenant.Tenant, callerID, ipID string, rate bool, usage, spend mode, amount int64, c *combined) error {
	now := l.now()
	nowUS := now.UnixMicro()
	cal := l.calendarAt(now, nowUS)
	keys := l.keysFor(cal, t.Slug)

	sc := l.getScratch()
	defer l.putScratch(sc)
	n, nRate := 0, 0
	if rate {
		c.rate = l.rateCheck(t, ipID != "")
		c.rateOn = true
		nRate = c.rate.st.n
		c.rate.fill(keys, callerID, ipID, nowUS, sc.keys[:], sc.ins[:])
		n = nRate
	}
	var which [maxBatch]*Counter
	var kinds [maxBatch]string
	window := func(kind string, m mode, cn *Counter, key string, endUS, delta int64) string {
		if !cn.Enabled() || m == skip {
			return ""
		}
		sc.keys[n] = key
		if m == peek {
			sc.ins[n] = kv.Increment{Max: kv.Unbounded} // a pure read
		} else {
			sc.ins[n] = kv.Increment{Delta: delta, Max: cn.Limit, TTL: time.Duration(endUS-nowUS)*time.Microsecond + l.slack}
		}
		which[n], kinds[n] = cn, kind
		n++
		return key
	}
	c.spendMode, c.useMode = spend, usage
	c.spend.Day = Counter{Window: cal.day, Limit: capMicro(t.SpendLimit.DailySpendUSD)}
	c.spend.Month = Counter{Window: cal.month, Limit: capMicro(t.SpendLimit.MonthlySpendUSD)}
	c.spendMon = window(KindSpend, spend, &c.spend.Month, keys.spendMonth, cal.monthEndUS, amount)
	c.spendDay = window(KindSpend, spend, &c.spend.Day, keys.spendDay, cal.dayEndUS, amount)
	c.use.Day = Counter{Window: cal.day, Limit: max(t.UsageLimit.DailyRequests, 0)}
	c.use.Month = Counter{Window: cal.month, Limit: max(t.UsageLimit.MonthlyRequests, 0)}
	c.useMonth = window(KindUsage, usage, &c.use.Month, keys.useMonth, cal.monthEndUS, 1)
	c.useDay = window(KindUsage, usage, &c.use.Day, keys.useDay, cal.dayEndUS, 1)
	refused := -1
	if n > 0 {
		vals, r, err := l.batch.IncrAll(ctx, sc.keys[:n], sc.ins[:n])
		if err == nil && len(vals) != n {
			err = errors.New("the store answered a wrong number of values")
		}
		if err != nil {
			c.rateOn, c.useMode, c.spendMode = false, skip, skip // nothing was read
			return storeError("combined check", err)
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
