package payment

import (
	"context"

	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/tenant"
)

// SpendFromQuota returns l's spend caps as the stage's SpendReserver
// (Config.Spend). A *quota.Limiter does not satisfy SpendReserver itself:
// its Reserve returns the concrete *quota.Reservation, and Go interfaces do
// not match on covariant result types.
//
// The result also implements ExchangeSpendReserver, so the stage reserves
// through quota.Limiter.ReserveExchange: a paid request's answer carries the
// X-Spend-Day-* and X-Spend-Month-* headers (refreshed when the hold is
// given back), and a refusal is 429 spend_cap_exceeded with X-Spend-Limit,
// X-Spend-Remaining, X-Spend-Reset, X-Spend-Window and Retry-After.
//
// With the limiter's RateLimitStage before the stage and its UsageStage
// after it, as the dispatcher is wired, ReserveExchange is also the paid
// request's combined counter check: the deferred rate limits, the usage
// unit and the price in one store round trip, all or none. The
// Reservation then holds the usage unit too: Release (which the stage
// calls on every failure) gives it back when the worker was not called.
func SpendFromQuota(l *quota.Limiter) SpendReserver {
	if l == nil {
		return nil
	}
	return quotaSpend{l: l}
}

type quotaSpend struct{ l *quota.Limiter }

var _ ExchangeSpendReserver = quotaSpend{}

// Reserve implements SpendReserver.
func (q quotaSpend) Reserve(ctx context.Context, t *tenant.Tenant, price decimal.Decimal) (Reservation, error) {
	r, err := q.l.Reserve(ctx, t, price)
	if err != nil {
		return nil, err // never a typed nil in the interface
	}
	return r, nil
}

// ReserveExchange implements ExchangeSpendReserver.
func (q quotaSpend) ReserveExchange(ctx context.Context, x *dispatch.Exchange, price decimal.Decimal) (Reservation, error) {
	r, err := q.l.ReserveExchange(ctx, x, price)
	if err != nil {
		return nil, err
	}
	return r, nil
}
