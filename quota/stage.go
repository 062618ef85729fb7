package quota

import (
	"context"
	"errors"
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
type RateLimitStage struct{ l *Limiter }

// UsageStage is pipeline step 6: one unit of the daily and monthly usage
// quotas, reserved before the worker runs. It sets the X-Usage-Day-* and
// X-Usage-Month-* headers and answers 429 usage_quota_exceeded on a
// refusal. When a later step refuses the request before the worker ran
// (next returns an error and Exchange.WorkerCalled is false), the unit is
// given back. A request the worker answered stays counted, whatever its
// status.
type UsageStage struct{ l *Limiter }

var (
	_ dispatch.Stage = (*RateLimitStage)(nil)
	_ dispatch.Stage = (*UsageStage)(nil)
)

// RateLimitStage returns the rate-limit stage of l.
func (l *Limiter) RateLimitStage() *RateLimitStage { return &RateLimitStage{l: l} }

// UsageStage returns the usage-quota stage of l.
func (l *Limiter) UsageStage() *UsageStage { return &UsageStage{l: l} }

// Handle implements dispatch.Stage.
func (s *RateLimitStage) Handle(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
	if x.Tenant == nil {
		return next(ctx, x)
	}
	st, err := s.l.Allow(ctx, x.Tenant, x.CallerID)
	if err != nil {
		var le *LimitError
		if errors.As(err, &le) {
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

// Handle implements dispatch.Stage.
func (s *UsageStage) Handle(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
	if x.Tenant == nil {
		return next(ctx, x)
	}
	u, err := s.l.ReserveUsage(ctx, x.Tenant)
	if err != nil {
		var le *LimitError
		if errors.As(err, &le) {
			u.SetHeaders(x.Header)
			x.Lifecycle = LifecycleUsageQuotaExceeded
		}
		return nil, err
	}
	u.SetHeaders(x.Header)
	resp, err := next(ctx, x)
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
