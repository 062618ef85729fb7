package quota

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/402claw/dispatcher/kv"
)

// Counter is the state of one usage or spend counter of a calendar window
// after a check. Amounts are requests for usage and micro-USD for spend.
type Counter struct {
	Window Window
	// Limit is the cap of the window; 0 means the window is not limited.
	Limit int64
	// Used is the counted amount, this request's included when it was
	// admitted.
	Used int64
}

// Enabled reports whether the window is limited.
func (c Counter) Enabled() bool { return c.Limit > 0 }

// Remaining is Limit - Used, never below zero.
func (c Counter) Remaining() int64 { return max(0, c.Limit-c.Used) }

// counterKind names the counters of a kind in messages and picks their
// keys.
type counterKind struct {
	name string // KindUsage or KindSpend
	keys func(*tenantKeys) (month, day string)
}

var (
	usageKind = counterKind{KindUsage, func(k *tenantKeys) (string, string) { return k.useMonth, k.useDay }}
	spendKind = counterKind{KindSpend, func(k *tenantKeys) (string, string) { return k.spendMonth, k.spendDay }}
)

// reserved is what reserve tells besides the counters.
type reserved struct {
	dayKey, monthKey string    // keys of the limited windows, else ""
	refused          string    // Kind of the refused window, or ""
	now              time.Time // the instant of the check
}

// reserve adds delta to the month and day counters of kind for slug, all or
// none, where their limits (> 0) allow it, filling in day and month. On a
// refusal it names the refused window: the month is checked first, so when
// both are exhausted the month, which resets later, is named. A delta of 0
// only reads. (The keys are returned rather than stored next to the
// counters so that escape analysis keeps the caller's value on the stack.)
func (l *Limiter) reserve(ctx context.Context, kind counterKind, slug string, dayLimit, monthLimit, delta int64, day, month *Counter) (r reserved, err error) {
	now := l.now()
	r.now = now
	nowUS := now.UnixMicro()
	cal := l.calendarAt(now, nowUS)
	*day = Counter{Window: cal.day, Limit: max(dayLimit, 0)}
	*month = Counter{Window: cal.month, Limit: max(monthLimit, 0)}
	if dayLimit <= 0 && monthLimit <= 0 {
		return r, nil
	}
	monthKey, dayKey := kind.keys(l.keysFor(cal, slug))

	sc := l.getScratch()
	defer l.putScratch(sc)
	var which [2]*Counter
	n := 0
	add := func(c *Counter, key string, endUS int64) {
		sc.keys[n] = key
		if delta == 0 {
			sc.ins[n] = kv.Increment{Max: kv.Unbounded} // a pure read
		} else {
			sc.ins[n] = kv.Increment{Delta: delta, Max: c.Limit, TTL: time.Duration(endUS-nowUS)*time.Microsecond + l.slack}
		}
		which[n] = c
		n++
	}
	if month.Enabled() {
		r.monthKey = monthKey
		add(month, monthKey, cal.monthEndUS)
	}
	if day.Enabled() {
		r.dayKey = dayKey
		add(day, dayKey, cal.dayEndUS)
	}
	refused, err := l.incrCounters(ctx, sc, n)
	if err != nil {
		return r, storeError(kind.name, err)
	}
	for i := 0; i < n; i++ {
		which[i].Used = sc.vals[i]
	}
	if refused >= 0 {
		r.refused = Month
		if which[refused] == day {
			r.refused = Day
		}
	}
	return r, nil
}

// release gives delta back to the counters at monthKey and dayKey (those
// not "") and updates month and day. (The counters and keys are separate
// parameters so that escape analysis keeps the counters where they are.)
func (l *Limiter) release(ctx context.Context, day, month *Counter, dayKey, monthKey string, delta int64) error {
	if delta <= 0 || (dayKey == "" && monthKey == "") {
		return nil
	}
	keys := make([]string, 0, 2)
	ends := make([]int64, 0, 2)
	if monthKey != "" {
		keys, ends = append(keys, monthKey), append(ends, month.Window.End.UnixMicro())
	}
	if dayKey != "" {
		keys, ends = append(keys, dayKey), append(ends, day.Window.End.UnixMicro())
	}
	deltas := []int64{delta, delta}[:len(keys)]
	vals, err := l.giveBack(ctx, keys, deltas, ends)
	if err != nil {
		return err
	}
	update := func(c *Counter, v int64) {
		if v >= 0 {
			c.Used = v
		} else {
			c.Used = max(0, c.Used-delta)
		}
	}
	i := 0
	if monthKey != "" {
		update(month, vals[i])
		i++
	}
	if dayKey != "" {
		update(day, vals[i])
	}
	return nil
}

// windowError builds the refusal of a usage quota or spend cap window.
func (l *Limiter) windowError(kind counterKind, c Counter, now time.Time, format func(int64) string, status func(http.Header)) *LimitError {
	e := &LimitError{
		Kind:       kind.name,
		Window:     c.Window.Kind,
		Limit:      c.Limit,
		Remaining:  c.Remaining(),
		Reset:      c.Window.End,
		RetryAfter: c.Window.End.Sub(now),
		header:     make(http.Header, 12),
	}
	period := "daily"
	if c.Window.Kind == Month {
		period = "monthly"
	}
	h := e.header
	status(h)
	var prefix string
	if kind.name == KindUsage {
		prefix = "X-Usage-"
		e.desc = fmt.Sprintf("%s usage quota of %d requests exhausted (window %s)", period, c.Limit, c.Window.ID)
	} else {
		prefix = "X-Spend-"
		e.desc = fmt.Sprintf("%s spend cap of %s USD reached (window %s)", period, format(c.Limit), c.Window.ID)
	}
	h.Set(prefix+"Limit", format(c.Limit))
	h.Set(prefix+"Remaining", format(c.Remaining()))
	h.Set(prefix+"Reset", itoa(c.Window.End.Unix()))
	h.Set(prefix+"Window", c.Window.Kind)
	h.Set(HeaderRetryAfter, itoa(e.RetryAfterSeconds()))
	return e
}

// setWindowHeaders sets <prefix>Day-* and <prefix>Month-* for the enabled
// windows.
func setWindowHeaders(h http.Header, prefix string, day, month *Counter, format func(int64) string) {
	for _, c := range [2]*Counter{day, month} {
		if !c.Enabled() {
			continue
		}
		p := prefix + "Day-"
		if c.Window.Kind == Month {
			p = prefix + "Month-"
		}
		h.Set(p+"Limit", format(c.Limit))
		h.Set(p+"Remaining", format(c.Remaining()))
		h.Set(p+"Reset", itoa(c.Window.End.Unix()))
	}
}
