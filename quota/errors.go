package quota

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/402claw/dispatcher/dispatch"
)

// Limit kinds of a LimitError.
const (
	KindRate  = "rate"
	KindUsage = "usage"
	KindSpend = "spend"
)

// Analytics lifecycles the quota stages set on refusals.
const (
	LifecycleRateLimited        = dispatch.LifecycleRateLimited
	LifecycleUsageQuotaExceeded = dispatch.LifecycleUsageQuotaExceeded
	LifecycleSpendCapExceeded   = dispatch.LifecycleSpendCapExceeded
)

// Errors of a spend Reservation used after it was settled one way.
var (
	// ErrReservationCommitted is returned by Release after Commit.
	ErrReservationCommitted = errors.New("quota: reservation already committed")
	// ErrReservationReleased is returned by Commit after Release.
	ErrReservationReleased = errors.New("quota: reservation already released")
)

// LimitError is a refusal by a rate limit, usage quota or spend cap. It
// wraps dispatch.ErrRateLimited, dispatch.ErrUsageQuotaExceeded or
// dispatch.ErrSpendCapExceeded (so the dispatcher answers 429 with the
// matching error code) and carries the refusal's headers, Retry-After
// included, as a dispatch.HeaderError.
type LimitError struct {
	// Kind is KindRate, KindUsage or KindSpend.
	Kind string
	// Window is Day or Month for usage and spend refusals, and the refusing
	// rate policy (PolicyCaller or PolicyTenant) for rate limits.
	Window string
	// Limit and Remaining are in requests, or in micro-USD for spend.
	Limit     int64
	Remaining int64
	// Reset is when the refusing limit resets: the window end for usage and
	// spend, the time the rate allowance is fully restored for rate limits.
	Reset time.Time
	// RetryAfter is the exact time until the request could be admitted;
	// the Retry-After header rounds it up to whole seconds.
	RetryAfter time.Duration

	header http.Header
	desc   string
	kind   *dispatch.Error // the wire error: code, headers, lifecycle
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("%s; retry after %ds", e.desc, e.RetryAfterSeconds())
}

// Unwrap returns the wire error of the error's kind: a *dispatch.Error
// matching dispatch.ErrRateLimited, ErrUsageQuotaExceeded or
// ErrSpendCapExceeded, carrying the refusal's headers and lifecycle.
func (e *LimitError) Unwrap() error {
	if e.kind == nil {
		var base *dispatch.Error
		switch e.Kind {
		case KindRate:
			base = dispatch.ErrRateLimited
		case KindUsage:
			base = dispatch.ErrUsageQuotaExceeded
		default:
			base = dispatch.ErrSpendCapExceeded
		}
		k := *base
		k.Header = e.header
		e.kind = &k
	}
	return e.kind
}

// ResponseHeader returns the refusal's headers. Callers must not modify it.
func (e *LimitError) ResponseHeader() http.Header { return e.header }

// RetryAfterSeconds is RetryAfter in whole seconds, rounded up: the value
// of the Retry-After header.
func (e *LimitError) RetryAfterSeconds() int64 {
	return ceilDuration(e.RetryAfter)
}

// Lifecycle returns the analytics lifecycle of the refusal.
func (e *LimitError) Lifecycle() dispatch.Lifecycle {
	switch e.Kind {
	case KindRate:
		return LifecycleRateLimited
	case KindUsage:
		return LifecycleUsageQuotaExceeded
	default:
		return LifecycleSpendCapExceeded
	}
}

// Header names.
const (
	HeaderRetryAfter         = "Retry-After"
	HeaderRateLimitLimit     = "X-RateLimit-Limit"
	HeaderRateLimitRemaining = "X-RateLimit-Remaining"
	HeaderRateLimitReset     = "X-RateLimit-Reset"
	HeaderRateLimitPolicy    = "RateLimit-Policy"
	HeaderRateLimit          = "RateLimit"

	HeaderUsageDayLimit       = "X-Usage-Day-Limit"
	HeaderUsageDayRemaining   = "X-Usage-Day-Remaining"
	HeaderUsageDayReset       = "X-Usage-Day-Reset"
	HeaderUsageMonthLimit     = "X-Usage-Month-Limit"
	HeaderUsageMonthRemaining = "X-Usage-Month-Remaining"
	HeaderUsageMonthReset     = "X-Usage-Month-Reset"
	HeaderUsageLimit          = "X-Usage-Limit"
	HeaderUsageRemaining      = "X-Usage-Remaining"
	HeaderUsageReset          = "X-Usage-Reset"
	HeaderUsageWindow         = "X-Usage-Window"

	HeaderSpendDayLimit       = "X-Spend-Day-Limit"
	HeaderSpendDayRemaining   = "X-Spend-Day-Remaining"
	HeaderSpendDayReset       = "X-Spend-Day-Reset"
	HeaderSpendMonthLimit     = "X-Spend-Month-Limit"
	HeaderSpendMonthRemaining = "X-Spend-Month-Remaining"
	HeaderSpendMonthReset     = "X-Spend-Month-Reset"
	HeaderSpendLimit          = "X-Spend-Limit"
	HeaderSpendRemaining      = "X-Spend-Remaining"
	HeaderSpendReset          = "X-Spend-Reset"
	HeaderSpendWindow         = "X-Spend-Window"
)

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// StoreError is a failure of the counter store. The request is refused
// (the limits are a contract) but nothing was counted or charged, so it is
// 503 store_unavailable: it wraps dispatch.ErrStoreUnavailable and the
// store's error. Error() names the store's error for logs; the answer's
// body carries only the generic message, so that no internals (addresses,
// key names) reach the client.
type StoreError struct {
	// Op names the check that failed ("rate limit", "usage", "spend", ...).
	Op  string
	Err error
}

func storeError(op string, err error) error {
	if err == nil {
		return nil
	}
	return &StoreError{Op: op, Err: err}
}

func (e *StoreError) Error() string {
	return fmt.Sprintf("%s: quota: %s: %v", dispatch.ErrStoreUnavailable.Message, e.Op, e.Err)
}

// Unwrap returns dispatch.ErrStoreUnavailable and the store's error.
func (e *StoreError) Unwrap() []error { return []error{dispatch.ErrStoreUnavailable, e.Err} }
