package dispatch

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strconv"
)

// Error is the one error type of the gateway's own answers. Its Code is the
// wire error code of the JSON body and picks the HTTP status from the one
// table below; the optional parts carry what a refusal needs beyond that:
// response headers (Retry-After, the limit headers, PAYMENT-REQUIRED), extra
// body fields (the x402 fields of an invalid payment), the analytics
// lifecycle, and the cause.
//
// The package's sentinels are *Error values: wrap them with fmt.Errorf and
// %w, or derive a detailed copy with With; errors.Is matches any *Error of
// the same code.
type Error struct {
	// Code is the wire error code.
	Code string
	// Message is the text for a person. For statuses of 500 and above the
	// client gets the code's default message instead: causes of server-side
	// failures carry internals (addresses, driver errors) that go to the
	// log only.
	Message string
	// Lifecycle is the analytics outcome of a request answered with this
	// error ("" for the dispatcher's default).
	Lifecycle Lifecycle
	// Header holds response headers the answer carries.
	Header http.Header
	// Details are extra top-level fields of the JSON body. They never
	// replace ok, error, message or requestId.
	Details map[string]any
	// Err is the cause, if any.
	Err error
}

// Error returns the message and, when there is one, the cause.
func (e *Error) Error() string {
	if e.Err != nil {
		if e.Message == "" {
			return e.Err.Error()
		}
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error of the same code, so that a
// detailed copy still matches its sentinel.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Status returns the HTTP status of the error's code.
func (e *Error) Status() int {
	if s, ok := statusByCode[e.Code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// With returns a copy of e with the given message (the sentinel's own when
// msg is empty) and cause. Add headers, details or a lifecycle to the copy.
func (e *Error) With(msg string, cause error) *Error {
	c := *e
	if msg != "" {
		c.Message = msg
	}
	c.Err = cause
	c.Header = e.Header.Clone()
	c.Details = maps.Clone(e.Details)
	return &c
}

// Sentinels for every error code of the wire contract.
var (
	ErrBadRequest             = &Error{Code: "bad_request", Message: "the request cannot be read"}
	ErrInvalidPayment         = &Error{Code: "invalid_payment", Message: "the payment header cannot be decoded", Lifecycle: LifecyclePaymentInvalid}
	ErrUnauthorized           = &Error{Code: "unauthorized", Message: "a valid admin bearer token is required"}
	ErrForbidden              = &Error{Code: "forbidden", Message: "this credential may not do that"}
	ErrNotFound               = &Error{Code: "not_found", Message: "not found"}
	ErrMethodNotAllowed       = &Error{Code: "method_not_allowed", Message: "method not allowed"}
	ErrTenantNotFound         = &Error{Code: "tenant_not_found", Message: "no tenant serves this host or path"}
	ErrWorkerNotFound         = &Error{Code: "worker_not_found", Message: "the tenant's worker does not exist"}
	ErrIdempotencyKeyInUse    = &Error{Code: "idempotency_key_in_use", Message: "a request with this idempotency key is being processed", Lifecycle: LifecyclePaymentInvalid}
	ErrIdempotencyKeyReused   = &Error{Code: "idempotency_key_reused", Message: "this idempotency key or payment was already used for a different request", Lifecycle: LifecyclePaymentInvalid}
	ErrRequestTooLarge        = &Error{Code: "request_too_large", Message: "the request body is larger than this gateway accepts"}
	ErrRateLimited            = &Error{Code: "rate_limited", Message: "too many requests", Lifecycle: LifecycleRateLimited}
	ErrUsageQuotaExceeded     = &Error{Code: "usage_quota_exceeded", Message: "the usage quota is exhausted", Lifecycle: LifecycleUsageQuotaExceeded}
	ErrSpendCapExceeded       = &Error{Code: "spend_cap_exceeded", Message: "the tenant's spend cap is reached", Lifecycle: LifecycleSpendCapExceeded}
	ErrWorkerFailure          = &Error{Code: "tenant_worker_failure", Message: "the tenant's worker failed or is unreachable", Lifecycle: LifecycleWorkerError}
	ErrFacilitatorUnavailable = &Error{Code: "facilitator_unavailable", Message: "the payment facilitator did not answer usably"}
	ErrWorkerLimitExceeded    = &Error{Code: "worker_limit_exceeded", Message: "the tenant's worker exceeded its limits", Lifecycle: LifecycleWorkerError}
	ErrWorkerTimeout          = &Error{Code: "worker_timeout", Message: "the tenant's worker did not answer in time", Lifecycle: LifecycleWorkerError}
	ErrStoreUnavailable       = &Error{Code: "store_unavailable", Message: "a counter or ledger store is unavailable; nothing was charged"}
	ErrInternal               = &Error{Code: "internal_error", Message: "internal error"}
	ErrConflict               = &Error{Code: "conflict", Message: "the change conflicts with the current state"}
	ErrNotImplemented         = &Error{Code: "not_implemented", Message: "not implemented by this gateway's stores"}
	ErrChannelBusy            = &Error{Code: "invalid_batch_settlement_evm_channel_busy", Message: "another request holds this payment channel; retry", Lifecycle: LifecyclePaymentInvalid}
)

// statusByCode is the one table that maps error codes to HTTP statuses.
var statusByCode = map[string]int{
	"bad_request":                               http.StatusBadRequest,
	"invalid_payment":                           http.StatusBadRequest,
	"unauthorized":                              http.StatusUnauthorized,
	"forbidden":                                 http.StatusForbidden,
	"tenant_not_found":                          http.StatusNotFound,
	"worker_not_found":                          http.StatusNotFound,
	"not_found":                                 http.StatusNotFound,
	"method_not_allowed":                        http.StatusMethodNotAllowed,
	"idempotency_key_in_use":                    http.StatusConflict,
	"idempotency_key_reused":                    http.StatusUnprocessableEntity,
	"request_too_large":                         http.StatusRequestEntityTooLarge,
	"rate_limited":                              http.StatusTooManyRequests,
	"usage_quota_exceeded":                      http.StatusTooManyRequests,
	"spend_cap_exceeded":                        http.StatusTooManyRequests,
	"tenant_worker_failure":                     http.StatusBadGateway,
	"facilitator_unavailable":                   http.StatusBadGateway,
	"worker_limit_exceeded":                     http.StatusServiceUnavailable,
	"worker_timeout":                            http.StatusGatewayTimeout,
	"store_unavailable":                         http.StatusServiceUnavailable,
	"internal_error":                            http.StatusInternalServerError,
	"conflict":                                  http.StatusConflict,
	"not_implemented":                           http.StatusNotImplemented,
	"invalid_batch_settlement_evm_channel_busy": http.StatusConflict,
}

// StatusOf returns the HTTP status and error code for err: the code of the
// first *Error in its chain, or 500 internal_error.
func StatusOf(err error) (int, string) {
	var e *Error
	if errors.As(err, &e) {
		return e.Status(), e.Code
	}
	return http.StatusInternalServerError, ErrInternal.Code
}

// lifecycleOf returns the first lifecycle an *Error in err's chain carries.
func lifecycleOf(err error) Lifecycle {
	var found Lifecycle
	walk(err, func(e *Error) bool {
		found = e.Lifecycle
		return found != ""
	})
	return found
}

// walk calls fn on every *Error in err's chain (depth first, outermost
// first) until fn returns true.
func walk(err error, fn func(*Error) bool) bool {
	for err != nil {
		if e, ok := err.(*Error); ok && fn(e) {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, inner := range u.Unwrap() {
				if walk(inner, fn) {
					return true
				}
			}
			return false
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		default:
			return false
		}
	}
	return false
}

// ErrorBody is the JSON body of the gateway's own errors.
type ErrorBody struct {
	OK        bool   `json:"ok"`
	Error     string `json:"error"`
	Message   string `json:"message"`
	RequestID string `json:"requestId"`
}

// ErrorResponse renders err as the gateway's answer: the status from the
// table, the headers of every *Error in the chain (outer ones win), and the
// JSON body {"ok":false,"error","message","requestId"} plus the details of
// the first *Error that has some. It is the one renderer of the gateway's
// errors: tenant requests and platform routes use it alike.
func ErrorResponse(err error, requestID string) *http.Response {
	status, code := StatusOf(err)
	h := make(http.Header)
	var details map[string]any
	var first *Error
	walk(err, func(e *Error) bool {
		if first == nil {
			first = e
		}
		for k, vs := range e.Header {
			if _, ok := h[k]; !ok {
				h[k] = append([]string(nil), vs...)
			}
		}
		if details == nil && len(e.Details) > 0 {
			details = e.Details
		}
		return false
	})
	msg := err.Error()
	if status >= 500 {
		msg = ErrInternal.Message
		if first != nil && status != http.StatusInternalServerError {
			msg = statusMessage(first)
		}
	}
	var body []byte
	if len(details) == 0 {
		body, _ = json.Marshal(ErrorBody{Error: code, Message: msg, RequestID: requestID})
	} else {
		m := make(map[string]any, len(details)+4)
		maps.Copy(m, details)
		m["ok"], m["error"], m["message"], m["requestId"] = false, code, msg, requestID
		body, _ = json.Marshal(m)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	return newResponse(status, h, body)
}

// statusMessage is the message a client gets for a server-side failure: the
// sentinel's own for the code, whatever the cause says.
func statusMessage(e *Error) string {
	for _, s := range sentinels {
		if s.Code == e.Code {
			return s.Message
		}
	}
	return ErrInternal.Message
}

var sentinels = []*Error{ErrWorkerFailure, ErrFacilitatorUnavailable, ErrWorkerLimitExceeded, ErrWorkerTimeout, ErrStoreUnavailable, ErrInternal, ErrNotImplemented}

// Errorf returns an *Error of the given wire code with a message: for
// handlers that answer with a code the table knows (an unknown code is 500
// internal_error).
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WriteJSON writes v as the JSON answer of a gateway route (platform,
// admin, discovery): Content-Type and nosniff set, a trailing newline. A
// value that cannot be encoded is answered 500 internal_error.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		WriteError(w, ErrInternal.With("", fmt.Errorf("encoding the answer: %w", err)), w.Header().Get(HeaderRequestID))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// WriteError writes err to w as ErrorResponse renders it. Platform routes
// and embedding gateways use it to answer in the same shape.
func WriteError(w http.ResponseWriter, err error, requestID string) {
	resp := ErrorResponse(err, requestID)
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(resp.Body.(*bytesBody).b)
}
