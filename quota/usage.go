package quota

import (
	"context"
	"net/http"
	"time"

	"github.com/402claw/dispatcher/tenant"
)

// UsageStatus is the state of a tenant's usage quotas: requests per UTC day
// and month.
type UsageStatus struct {
	Day, Month Counter
}

// SetHeaders sets X-Usage-Day-Limit, X-Usage-Day-Remaining,
// X-Usage-Day-Reset and the same for Month, for the windows that are
// limited. Reset is the Unix second the window ends.
func (s *UsageStatus) SetHeaders(h http.Header) {
	setWindowHeaders(h, "X-Usage-", &s.Day, &s.Month, itoa)
}

// UsageReservation is one request's unit of usage quota, reserved in the
// day and month counters before the worker runs. Release gives it back;
// otherwise it stays counted. A UsageReservation is a value meant to be
// kept in one place (a local variable): Release marks the value it is
// called on, so a copy could give the unit back a second time.
type UsageReservation struct {
	UsageStatus
	l                *Limiter
	dayKey, monthKey string
	held             bool
}

// Held reports whether the reservation holds a unit that Release would
// give back.
func (r *UsageReservation) Held() bool { return r.held }

// Release gives the reserved unit back to both counters, once; later calls
// do nothing. It runs even when ctx is cancelled, since a unit that is not
// given back is lost until the window ends.
func (r *UsageReservation) Release(ctx context.Context) error {
	if !r.held {
		return nil
	}
	r.held = false
	return r.l.release(ctx, &r.Day, &r.Month, r.dayKey, r.monthKey, 1)
}

// ReserveUsage counts one request of t against its usageLimit.dailyRequests
// and usageLimit.monthlyRequests, in one all-or-none kv.IncrAll (one round
// trip on a store with a batch ability). When either is exhausted nothing
// is counted and the error is a *LimitError wrapping
// dispatch.ErrUsageQuotaExceeded, naming the binding window (the month when
// both are exhausted). A tenant with no usage limits reserves nothing.
//
// The returned reservation carries the counters for the response headers,
// on a refusal too.
func (l *Limiter) ReserveUsage(ctx context.Context, t *tenant.Tenant) (UsageReservation, error) {
	r := UsageReservation{l: l}
	res, err := l.reserve(ctx, usageKind, t.Slug, t.UsageLimit.DailyRequests, t.UsageLimit.MonthlyRequests, 1, &r.Day, &r.Month)
	if err != nil {
		return r, err
	}
	r.dayKey, r.monthKey = res.dayKey, res.monthKey
	switch res.refused {
	case "":
		r.held = res.dayKey != "" || res.monthKey != ""
		return r, nil
	case Month:
		return r, l.usageError(r.UsageStatus, r.Month, res.now)
	default:
		return r, l.usageError(r.UsageStatus, r.Day, res.now)
	}
}

func (l *Limiter) usageError(st UsageStatus, c Counter, now time.Time) *LimitError {
	return l.windowError(usageKind, c, now, itoa, st.SetHeaders)
}

// PeekUsage returns t's usage counters without counting anything.
func (l *Limiter) PeekUsage(ctx context.Context, t *tenant.Tenant) (UsageStatus, error) {
	var st UsageStatus
	_, err := l.reserve(ctx, usageKind, t.Slug, t.UsageLimit.DailyRequests, t.UsageLimit.MonthlyRequests, 0, &st.Day, &st.Month)
	return st, err
}
