package quota

import (
	"context"
	"net/http"

	"github.com/402claw/dispatcher/dispatch"
)

// RateLimitStage is pipeline step 4: the per-caller and tenant-wide rate
// limits. It sets the X-RateLimit-* headers on every response of the tenant
// (Exchange.Header) and answers 429 rate_limited, with Retry-After, on a
// refusal. Because it runs first among the quota stages, it also fills in
// the usage and spend headers of responses that ended before the usage or
// payment stage could set them (a rate refusal, a 402 challenge, a rejected
// payment), by reading the counters without changing them.
//
// For a request that carries a payment header to a tenant that charges,
// when the store has a batch ability and the limiter's UsageStage is in
// use, the stage defers its check: the payment stage makes it after
// verifying the payment, in the one round trip that also reserves the
// usage unit and the price (see Limiter.ReserveExchange), or else the
// usage stage with the usage unit. When neither made it because the
// payment stage answered first (an undecodable, mismatched or invalid
// payment, a replay, an idempotency conflict, a facilitator or ledger
// failure), the stage makes it when next returns, before the answer leaves:
// the request counts one rate unit, and a request over the limit is
// answered 429 rate_limited instead, as it would have been without the
// deferral. Nothing those answers leave behind is consumed.
type RateLimitStage struct{ l *Limiter }

// UsageStage is pipeline step 6: one unit of the daily and monthly usage
// quotas, reserved before the worker runs. It sets the X-Usage-Day-* and
// X-Usage-Month-* headers and answers 429 usage_quota_exceeded on a
// refusal. When a later step refuses the request before the worker ran
// (next returns an error and Exchange.WorkerCalled is false), the unit is
// given back. A request the worker answered stays counted, whatever its
// status.
//
// When the payment stage's combined check (Limiter.ReserveExchange)
// already counted the unit, the stage counts nothing: the spend
// reservation holds the unit and gives it back with the price. When the
// rate check was deferred and no payment stage made it, the stage makes it
// together with the usage unit, in one round trip.
type UsageStage struct{ l *Limiter }

var (
	_ dispatch.Stage = (*RateLimitStage)(nil)
	_ dispatch.Stage = (*UsageStage)(nil)
)

// RateLimitStage returns the rate-limit stage of l.
func (l *Limiter) RateLimitStage() *RateLimitStage { return &RateLimitStage{l: l} }

// UsageStage returns the usage-quota stage of l. Calling it tells the
// limiter that its usage stage is in use, which enables the combined
// one-round-trip check of paid requests: the stage must then be in the
// pipeline, after the payment stage and before the worker, as the
// dispatcher's wiring puts it. (A limiter whose usage stage is never
// created checks rate limits and spend as separate steps.)
func (l *Limiter) UsageStage() *UsageStage {
	l.staged.Store(true)
	return &UsageStage{l: l}
}

// Handle implements dispatch.Stage.
func (s *RateLimitStage) Handle(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
	if x.Tenant == nil {
		return next(ctx, x)
	}
	if s.l.batch != nil && s.l.staged.Load() && x.Tenant.Charges() && hasPayment(x.Request.Header) {
		return s.deferred(ctx, x, next)
	}
	st, err := s.l.Allow(ctx, x.Tenant, x.CallerID)
	if err != nil {
		if _, ok := isLimit(err); ok {
			st.SetHeaders(x.Header)
			x.Lifecycle = LifecycleRateLimited
			s.l.fillHeaders(ctx, x)
		}
		return nil, err
	}
	st.SetHeaders(x.Header)
	resp, err := next(ctx, x)
	s.l.fillHeaders(ctx, x)
	return resp, err
}

// deferred leaves the rate check to the combined one, and makes it itself
// when no later stage did.
func (s *RateLimitStage) deferred(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
	st := &exchangeState{callerID: x.CallerID, ratePending: true}
	x.SetValue(exchangeKey{}, st)
	resp, err := next(ctx, x)
	if st.ratePending {
		st.ratePending = false
		rs, rerr := s.l.Allow(ctx, x.Tenant, st.callerID)
		le, refused := isLimit(rerr)
		switch {
		case rerr == nil:
			rs.SetHeaders(x.Header)
		case x.WorkerCalled:
			// Only a pipeline without the usage stage after the payment
			// stage gets here: the worker answered, so the answer stands.
			if refused {
				rs.SetHeaders(x.Header)
			}
		default:
			// Answer as the stage would have before anything else ran.
			if resp != nil {
				resp.Body.Close()
			}
			resp, err = nil, rerr
			x.Lifecycle = ""
			if refused {
				rs.SetHeaders(x.Header)
				x.Lifecycle = le.Lifecycle()
			}
		}
	}
	s.l.fillHeaders(ctx, x)
	return resp, err
}

// Handle implements dispatch.Stage.
func (s *UsageStage) Handle(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
	if x.Tenant == nil {
		return next(ctx, x)
	}
	st := stateOf(x)
	if st != nil && st.usageDone {
		// Counted by the combined check; the spend reservation gives it back.
		return next(ctx, x)
	}
	var u UsageReservation
	var err error
	if st != nil && st.ratePending {
		u, err = s.l.reserveRateAndUsage(ctx, x, st)
	} else {
		u, err = s.l.ReserveUsage(ctx, x.Tenant)
	}
	if st != nil {
		st.usageDone = true
	} else if x.Tenant.Charges() {
		// A payment stage after this one must not count the unit again.
		x.SetValue(exchangeKey{}, &exchangeState{usageDone: true})
	}
	if err != nil {
		if le, ok := isLimit(err); ok {
			u.SetHeaders(x.Header)
			x.Lifecycle = le.Lifecycle()
		}
		return nil, err
	}
	u.SetHeaders(x.Header)
	resp, err := next(ctx, x)
	if u.Held() && err == nil && x.Tenant.Charges() {
		// A payment stage around this one settles after we return: if the
		// settlement fails, the request consumed nothing.
		x.OnRefund(func(ctx context.Context) {
			if rerr := u.Release(ctx); rerr == nil {
				u.SetHeaders(x.Header)
			}
		})
	}
	if err != nil && !x.WorkerCalled && u.Held() {
		// Refused before the worker ran: the request consumed nothing.
		if rerr := u.Release(ctx); rerr == nil {
			u.SetHeaders(x.Header)
		}
	}
	return resp, err
}

// fillHeaders reads the usage and spend counters of x's tenant and sets
// their headers when the response does not carry them yet.
func (l *Limiter) fillHeaders(ctx context.Context, x *dispatch.Exchange) {
	t := x.Tenant
	if (t.UsageLimit.DailyRequests > 0 || t.UsageLimit.MonthlyRequests > 0) &&
		x.Header.Get(HeaderUsageDayLimit) == "" && x.Header.Get(HeaderUsageMonthLimit) == "" {
		if st, err := l.PeekUsage(ctx, t); err == nil {
			st.SetHeaders(x.Header)
		}
	}
	if t.Charges() && (t.SpendLimit.DailySpendUSD.IsPositive() || t.SpendLimit.MonthlySpendUSD.IsPositive()) &&
		x.Header.Get(HeaderSpendDayLimit) == "" && x.Header.Get(HeaderSpendMonthLimit) == "" {
		if st, err := l.PeekSpend(ctx, t); err == nil {
			st.SetHeaders(x.Header)
		}
	}
}

// usageRefundable reports whether a request's usage unit goes back: it
// never reached the worker, or its payment failed to settle (the client was
// answered 402 and charged nothing, so it consumes no quota either).
func usageRefundable(x *dispatch.Exchange) bool {
	return x != nil && (!x.WorkerCalled || x.SettlementFailed)
}
