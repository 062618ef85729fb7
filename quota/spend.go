package quota

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/tenant"
)

var (
	microPerUSD = decimal.New(1, 6)
	maxMicro    = decimal.New(kv.Unbounded, 0)
)

// MicroUSD converts an exact USD amount to integer micro-USD. It fails for
// negative amounts, amounts with more than six decimal places and amounts
// too large for an int64.
func MicroUSD(usd decimal.Decimal) (int64, error) {
	m := usd.Mul(microPerUSD)
	switch {
	case m.IsNegative():
		return 0, fmt.Errorf("quota: negative amount %s USD", usd)
	case !m.IsInteger():
		return 0, fmt.Errorf("quota: amount %s USD has more than 6 decimal places", usd)
	case m.GreaterThan(maxMicro):
		return 0, fmt.Errorf("quota: amount %s USD is too large", usd)
	}
	return m.IntPart(), nil
}

// USD converts integer micro-USD to an exact decimal amount.
func USD(micro int64) decimal.Decimal { return decimal.New(micro, -6) }

// formatUSD is the header form of an amount: a plain decimal string with no
// trailing zeros ("10", "0.25", "0.000001").
func formatUSD(micro int64) string { return USD(micro).String() }

// capMicro converts a spend cap to micro-USD: 0 (no cap) when it is not
// positive, rounded down to whole micro-USD (the cap is never exceeded),
// and unbounded beyond int64.
func capMicro(usd decimal.Decimal) int64 {
	if !usd.IsPositive() {
		return 0
	}
	m := usd.Mul(microPerUSD).Floor()
	if m.GreaterThan(maxMicro) {
		return kv.Unbounded
	}
	return max(m.IntPart(), 0)
}

// SpendStatus is the state of a tenant's spend caps per UTC day and month,
// in micro-USD.
type SpendStatus struct {
	Day, Month Counter
}

// SetHeaders sets X-Spend-Day-Limit, X-Spend-Day-Remaining,
// X-Spend-Day-Reset and the same for Month, for the windows that are
// capped. Amounts are decimal USD strings; Reset is the Unix second the
// window ends.
func (s *SpendStatus) SetHeaders(h http.Header) {
	setWindowHeaders(h, "X-Spend-", &s.Day, &s.Month, formatUSD)
}

type reservationState int

const (
	pending reservationState = iota
	committed
	released
)

// Reservation is a paid request's price, reserved in the tenant's day and
// month spend counters before the worker runs, so that concurrent requests
// can never settle more than the caps. Settle it exactly once: Commit after
// a successful settlement (the amount simply stays counted), Release on any
// failure (the amount is given back). Each is idempotent, and once one has
// happened the other fails with ErrReservationCommitted or
// ErrReservationReleased. A Reservation is safe for concurrent use.
type Reservation struct {
	l      *Limiter
	tenant string
	price  decimal.Decimal
	amount int64 // micro-USD

	mu               sync.Mutex
	state            reservationState
	st               SpendStatus
	dayKey, monthKey string
}

// Tenant returns the slug of the tenant the reservation is for.
func (r *Reservation) Tenant() string { return r.tenant }

// Amount returns the reserved price.
func (r *Reservation) Amount() decimal.Decimal { return r.price }

// Status returns the spend counters as of the reservation (or its release).
func (r *Reservation) Status() SpendStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.st
}

// SetHeaders sets the X-Spend-Day-* and X-Spend-Month-* headers of the
// reservation's counters on h.
func (r *Reservation) SetHeaders(h http.Header) {
	st := r.Status()
	st.SetHeaders(h)
}

// Commit keeps the reserved amount counted: call it once the payment is
// settled. It makes no store call. Committing again is a no-op; committing
// a released reservation returns ErrReservationReleased.
func (r *Reservation) Commit(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch r.state {
	case released:
		return ErrReservationReleased
	case pending:
		r.state = committed
	}
	return nil
}

// Release gives the reserved amount back to the day and month counters:
// call it when the request fails before settlement or settlement fails.
// Releasing again is a no-op; releasing a committed reservation returns
// ErrReservationCommitted. The give-back runs even when ctx is cancelled.
// If the store fails, the reservation still counts as released and the
// amount stays counted until its window ends: erring that way can never
// let settlements exceed a cap.
func (r *Reservation) Release(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch r.state {
	case committed:
		return ErrReservationCommitted
	case released:
		return nil
	}
	r.state = released
	if err := r.l.release(ctx, &r.st.Day, &r.st.Month, r.dayKey, r.monthKey, r.amount); err != nil {
		return fmt.Errorf("quota: releasing %s USD of tenant %q: %w", r.price, r.tenant, err)
	}
	return nil
}

// Reserve reserves price against t's spendLimit.dailySpendUsd and
// spendLimit.monthlySpendUsd, atomically in both (one all-or-none
// kv.IncrAll). The x402 payment stage calls it after verifying a payment and
// before calling next, then Commit after settlement and Release otherwise.
//
// When a cap would be exceeded nothing is reserved and the error is a
// *LimitError wrapping dispatch.ErrSpendCapExceeded, naming the binding
// window, with the X-Spend-* headers and Retry-After. A tenant without caps
// gets a reservation that counts nothing. price must be a non-negative
// amount with at most six decimal places.
func (l *Limiter) Reserve(ctx context.Context, t *tenant.Tenant, price decimal.Decimal) (*Reservation, error) {
	amount, err := MicroUSD(price)
	if err != nil {
		return nil, err
	}
	r := &Reservation{l: l, tenant: t.Slug, price: price, amount: amount}
	res, err := l.reserve(ctx, spendKind, t.Slug, capMicro(t.SpendLimit.DailySpendUSD), capMicro(t.SpendLimit.MonthlySpendUSD), amount, &r.st.Day, &r.st.Month)
	if err != nil {
		return nil, err
	}
	if res.refused != "" {
		c := r.st.Day
		if res.refused == Month {
			c = r.st.Month
		}
		return nil, l.windowError(spendKind, c, res.now, formatUSD, r.st.SetHeaders)
	}
	r.dayKey, r.monthKey = res.dayKey, res.monthKey
	return r, nil
}

// PeekSpend returns t's spend counters without reserving anything.
func (l *Limiter) PeekSpend(ctx context.Context, t *tenant.Tenant) (SpendStatus, error) {
	var st SpendStatus
	_, err := l.reserve(ctx, spendKind, t.Slug, capMicro(t.SpendLimit.DailySpendUSD), capMicro(t.SpendLimit.MonthlySpendUSD), 0, &st.Day, &st.Month)
	return st, err
}
