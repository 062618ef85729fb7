package quota

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"sync"

	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/meter"
)

var _ meter.Meter = (*Limiter)(nil)

// Admit meters one request (meter.Params): its rate limits when p.Rate, one
// unit of usage quota when p.Usage, and p.Spend held against the spend
// caps; and it reads the tenant's other counters for the headers. On a
// store with a batch ability (kv.BatchIncrementer) that is one round trip,
// all or none; otherwise the rate limits, the usage unit and the spend are
// separate steps, each given back when a later one refuses.
//
// A refusal returns the refusing limit's *LimitError (429 rate_limited,
// usage_quota_exceeded or spend_cap_exceeded, with its headers and
// Retry-After); nothing is counted but, for a usage or spend refusal, the
// rate unit. The returned Hold then still carries the headers of what was
// read. A store failure is a *StoreError (503) and a nil Hold.
//
// The per-client-address limit applies when p.ClientIP is valid and the
// caller identity is not that address itself.
func (l *Limiter) Admit(ctx context.Context, p meter.Params) (meter.Hold, error) {
	h, err := l.admit(ctx, p)
	if h == nil {
		return nil, err // never a typed nil in the interface
	}
	return h, err
}

func (l *Limiter) admit(ctx context.Context, p meter.Params) (*Hold, error) {
	t := p.Tenant
	amount, err := MicroUSD(p.Spend)
	if err != nil {
		return nil, err
	}
	ipID := ""
	if p.Rate && p.ClientIP.IsValid() {
		if id := hashAddr(addrKey(p.ClientIP)); id != p.CallerID {
			ipID = id
		}
	}
	usage, spend := skip, skip
	if usageLimited(t) {
		usage = peek
		if p.Usage {
			usage = count
		}
	}
	if spendCapped(t) && (amount > 0 || t.Charges()) {
		spend = peek
		if amount > 0 {
			spend = count
		}
	}
	h := &Hold{l: l, tenant: t.Slug, price: p.Spend}
	c := &h.c
	if l.batch != nil {
		err = l.checkAll(ctx, t, p.CallerID, ipID, p.Rate, usage, spend, amount, c)
	} else {
		err = l.checkSteps(ctx, p, ipID, usage, spend, amount, c)
	}
	if err != nil {
		if _, ok := isLimit(err); !ok && !c.rateOn {
			return nil, err
		}
		return h, err // with the headers of what was read
	}
	h.useHeld = usage == count && (c.useDay != "" || c.useMonth != "")
	if spend == count && (c.spendDay != "" || c.spendMon != "") {
		h.amount = amount
	}
	return h, nil
}

// checkSteps is checkAll for a store without a batch ability: the rate
// limits, then the usage windows, then the spend windows, each all or none
// and given back when a later step refuses.
func (l *Limiter) checkSteps(ctx context.Context, p meter.Params, ipID string, usage, spend mode, amount int64, c *combined) (err error) {
	t := p.Tenant
	if p.Rate {
		st, err := l.allow(ctx, t, p.CallerID, ipID)
		c.rate.st = st
		if err != nil {
			_, c.rateOn = isLimit(err)
			return err
		}
		c.rateOn = true
	}
	// A later store failure leaves only the rate headers: the other
	// counters were not read.
	defer func() {
		if _, ok := isLimit(err); err != nil && !ok {
			c.useMode, c.spendMode = skip, skip
		}
	}()
	c.useMode, c.spendMode = usage, spend
	if usage != skip {
		delta := int64(0)
		if usage == count {
			delta = 1
		}
		res, err := l.reserve(ctx, usageKind, t.Slug, t.UsageLimit.DailyRequests, t.UsageLimit.MonthlyRequests, delta, &c.use.Day, &c.use.Month)
		if err != nil {
			return err
		}
		if res.refused != "" {
			w := c.use.Day
			if res.refused == Month {
				w = c.use.Month
			}
			return l.usageError(c.use, w, res.now)
		}
		if usage == count {
			c.useDay, c.useMonth = res.dayKey, res.monthKey
		}
	}
	if spend != skip {
		delta := int64(0)
		if spend == count {
			delta = amount
		}
		res, err := l.reserve(ctx, spendKind, t.Slug, capMicro(t.SpendLimit.DailySpendUSD), capMicro(t.SpendLimit.MonthlySpendUSD), delta, &c.spend.Day, &c.spend.Month)
		if err == nil && res.refused != "" {
			w := c.spend.Day
			if res.refused == Month {
				w = c.spend.Month
			}
			err = l.windowError(spendKind, w, res.now, formatUSD, c.spend.SetHeaders)
		}
		if err != nil {
			if usage == count {
				_ = l.release(ctx, &c.use.Day, &c.use.Month, c.useDay, c.useMonth, 1)
			}
			return err
		}
		if spend == count {
			c.spendDay, c.spendMon = res.dayKey, res.monthKey
		}
	}
	return nil
}

// Hold is what an admitted request holds (meter.Hold): its usage unit and
// its spend amount. Settle it once: Commit keeps the unit and the charged
// amount and gives the rest back, Release gives everything back. Each is
// idempotent, and once one has happened the other fails with
// ErrReservationCommitted or ErrReservationReleased. A Hold is safe for
// concurrent use.
type Hold struct {
	l      *Limiter
	tenant string
	price  decimal.Decimal

	mu      sync.Mutex
	state   reservationState
	c       combined
	useHeld bool
	amount  int64 // micro-USD held in the spend windows
}

var _ meter.Hold = (*Hold)(nil)

// SetHeaders sets the X-RateLimit-*, X-Usage-* and X-Spend-* headers of the
// counters the request touched or read.
func (h *Hold) SetHeaders(hd http.Header) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.c.rateOn {
		h.c.rate.st.SetHeaders(hd)
	}
	if h.c.useMode != skip {
		h.c.use.SetHeaders(hd)
	}
	if h.c.spendMode != skip {
		h.c.spend.SetHeaders(hd)
	}
}

// Rate returns the rate-limit status of the check (zero when the request
// was not rate limited).
func (h *Hold) Rate() RateStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.c.rate.st
}

// Commit keeps the usage unit and charged counted and gives the rest of the
// held amount back (one store call when there is something to give back).
// charged above the held amount counts only what was held: the caps were
// checked against the hold. Committing again is a no-op; committing a
// released hold returns ErrReservationReleased.
func (h *Hold) Commit(ctx context.Context, charged decimal.Decimal) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch h.state {
	case released:
		return ErrReservationReleased
	case committed:
		return nil
	}
	h.state = committed
	keep := h.amount
	if m, err := MicroUSD(charged); err == nil && m < keep {
		keep = max(m, 0)
	}
	back := h.amount - keep
	if back <= 0 {
		return nil
	}
	if err := h.l.release(ctx, &h.c.spend.Day, &h.c.spend.Month, h.c.spendDay, h.c.spendMon, back); err != nil {
		return fmt.Errorf("quota: giving back %s USD of tenant %q: %w", USD(back), h.tenant, err)
	}
	return nil
}

// Release gives the usage unit and the held amount back, in one store call,
// even when ctx is cancelled. Releasing again is a no-op; releasing a
// committed hold returns ErrReservationCommitted. If the store fails, the
// hold still counts as released and the amounts stay counted until their
// windows end: erring that way can never let settlements exceed a cap.
func (h *Hold) Release(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch h.state {
	case committed:
		return ErrReservationCommitted
	case released:
		return nil
	}
	h.state = released
	type item struct {
		c     *Counter
		key   string
		delta int64
	}
	items := [4]item{
		{&h.c.spend.Month, h.c.spendMon, h.amount}, {&h.c.spend.Day, h.c.spendDay, h.amount},
	}
	if h.useHeld {
		items[2] = item{&h.c.use.Month, h.c.useMonth, 1}
		items[3] = item{&h.c.use.Day, h.c.useDay, 1}
	}
	var keys []string
	var deltas, ends []int64
	var idx []int
	for i, it := range items {
		if it.key == "" || it.delta <= 0 {
			continue
		}
		keys, deltas = append(keys, it.key), append(deltas, it.delta)
		ends, idx = append(ends, it.c.Window.End.UnixMicro()), append(idx, i)
	}
	if len(keys) == 0 {
		return nil
	}
	vals, err := h.l.giveBack(ctx, keys, deltas, ends)
	if err != nil {
		return fmt.Errorf("quota: releasing the hold of tenant %q: %w", h.tenant, err)
	}
	for j, i := range idx {
		if v := vals[j]; v >= 0 {
			items[i].c.Used = v
		} else {
			items[i].c.Used = max(0, items[i].c.Used-items[i].delta)
		}
	}
	return nil
}

var zero decimal.Decimal

// addrKey is what the per-address limit counts: an IPv4 address, or the
// /64 of an IPv6 one, since any IPv6 client holds a whole /64 and could
// otherwise rotate through it.
func addrKey(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.String()
		}
	}
	return ip.String()
}

// hashAddr is the id of a client address: the caller id the dispatcher
// gives a caller known only by that address, so that the per-address limit
// can tell such a caller from one asserting an identity.
func hashAddr(ip string) string { return dispatch.HashCaller("ip:" + ip) }
