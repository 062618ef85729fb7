package quota

import (
	"encoding/json"
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
	LifecycleRateLimited        = "rate_limited"
	LifecycleUsageQuotaExceeded = "usage_quota_exceeded"
	LifecycleSpendCapExceeded   = "spend_cap_exceeded"
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
}

var _ dispatch.HeaderError = (*LimitError)(nil)

func (e *LimitError) Error() string {
	return fmt.Sprintf("%s; retry after %ds", e.desc, e.RetryAfterSeconds())
}

// Unwrap returns the dispatch sentinel of the error's kind.
func (e *LimitError) Unwrap() error {
	switch e.Kind {
	case KindRate:
		return dispatch.ErrRateLimited
	case KindUsage:
		return dispatch.ErrUsageQuotaExceeded
	default:
		return dispatch.ErrSpendCapExceeded
	}
}

// ResponseHeader returns the refusal's headers (implementing
// dispatch.HeaderError). Callers must not modify it.
func (e *LimitError) ResponseHeader() http.Header { return e.header }

// RetryAfterSeconds is RetryAfter in whole seconds, rounded up: the value
// of the Retry-After header.
func (e *LimitError) RetryAfterSeconds() int64 {
	return ceilDuration(e.RetryAfter)
}

// Lifecycle returns the analytics lifecycle of the refusal.
func (e *LimitError) Lifecycle() string {
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

var _ dispatch.BodyError = (*StoreError)(nil)

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

// ResponseBody implements dispatch.BodyError: the gateway's JSON error body
// with the generic message of dispatch.ErrStoreUnavailable.
func (e *StoreError) ResponseBody(requestID string) (string, []byte) {
	b, _ := json.Marshal(dispatch.ErrorBody{Error: dispatch.ErrStoreUnavailable.Code, Message: dispatch.ErrStoreUnavailable.Message, RequestID: requestID})
	return "application/json", b
}
