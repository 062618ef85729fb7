package dispatch

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
)

// Error is an error the gateway answers itself. Its Code is the wire error
// code of the JSON body; its HTTP status comes from the one table below.
// The package's sentinels are *Error values: wrap them with fmt.Errorf and
// %w, and test for them with errors.Is.
type Error struct {
	Code    string
	Message string // the default message for a person
}

func (e *Error) Error() string { return e.Message }

// Status returns the HTTP status of the error's code.
func (e *Error) Status() int {
	if s, ok := statusByCode[e.Code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Sentinels for every error code of the wire contract.
var (
	ErrBadRequest             = &Error{"bad_request", "the request cannot be read"}
	ErrInvalidPayment         = &Error{"invalid_payment", "the payment header cannot be decoded"}
	ErrUnauthorized           = &Error{"unauthorized", "a valid admin bearer token is required"}
	ErrTenantNotFound         = &Error{"tenant_not_found", "no tenant serves this host or path"}
	ErrWorkerNotFound         = &Error{"worker_not_found", "the tenant's worker does not exist"}
	ErrIdempotencyKeyInUse    = &Error{"idempotency_key_in_use", "a request with this idempotency key is being processed"}
	ErrIdempotencyKeyReused   = &Error{"idempotency_key_reused", "this idempotency key or payment was already used for a different request"}
	ErrRateLimited            = &Error{"rate_limited", "too many requests"}
	ErrUsageQuotaExceeded     = &Error{"usage_quota_exceeded", "the usage quota is exhausted"}
	ErrSpendCapExceeded       = &Error{"spend_cap_exceeded", "the tenant's spend cap is reached"}
	ErrWorkerFailure          = &Error{"tenant_worker_failure", "the tenant's worker failed or is unreachable"}
	ErrFacilitatorUnavailable = &Error{"facilitator_unavailable", "the payment facilitator did not answer usably"}
	ErrWorkerLimitExceeded    = &Error{"worker_limit_exceeded", "the tenant's worker exceeded its limits"}
	ErrWorkerTimeout          = &Error{"worker_timeout", "the tenant's worker did not answer in time"}
	ErrStoreUnavailable       = &Error{"store_unavailable", "a counter or ledger store is unavailable; nothing was charged"}
	ErrInternal               = &Error{"internal_error", "internal error"}
)

// statusByCode is the one table that maps error codes to HTTP statuses.
var statusByCode = map[string]int{
	"bad_request":             http.StatusBadRequest,
	"invalid_payment":         http.StatusBadRequest,
	"unauthorized":            http.StatusUnauthorized,
	"tenant_not_found":        http.StatusNotFound,
	"worker_not_found":        http.StatusNotFound,
	"not_found":               http.StatusNotFound,
	"idempotency_key_in_use":  http.StatusConflict,
	"idempotency_key_reused":  http.StatusUnprocessableEntity,
	"rate_limited":            http.StatusTooManyRequests,
	"usage_quota_exceeded":    http.StatusTooManyRequests,
	"spend_cap_exceeded":      http.StatusTooManyRequests,
	"tenant_worker_failure":   http.StatusBadGateway,
	"facilitator_unavailable": http.StatusBadGateway,
	"worker_limit_exceeded":   http.StatusServiceUnavailable,
	"worker_timeout":          http.StatusGatewayTimeout,
	"store_unavailable":       http.StatusServiceUnavailable,
	"internal_error":          http.StatusInternalServerError,
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

// HeaderError is implemented by errors that carry response headers, such as
// Retry-After and the limit headers of a refusal.
type HeaderError interface {
	error
	ResponseHeader() http.Header
}

// BodyError is implemented by errors whose body is not the gateway's JSON
// error body: x402 refusals answer with an x402 body (and extra fields).
type BodyError interface {
	error
	// ResponseBody returns the body and its content type.
	ResponseBody(requestID string) (contentType string, body []byte)
}

// ErrorBody is the JSON body of the gateway's own errors.
type ErrorBody struct {
	OK        bool   `json:"ok"`
	Error     string `json:"error"`
	Message   string `json:"message"`
	RequestID string `json:"requestId"`
}

// ErrorResponse renders err as the gateway's answer: the status from the
// table, headers from a HeaderError, and the JSON error body (or a
// BodyError's own body).
func ErrorResponse(err error, requestID string) *http.Response {
	status, code := StatusOf(err)
	h := make(http.Header)
	var he HeaderError
	if errors.As(err, &he) {
		for k, vs := range he.ResponseHeader() {
			h[k] = append([]string(nil), vs...)
		}
	}
	var body []byte
	var be BodyError
	if errors.As(err, &be) {
		var ct string
		ct, body = be.ResponseBody(requestID)
		h.Set("Content-Type", ct)
	} else {
		msg := err.Error()
		if status >= 500 {
			// Server-side failures carry internals (addresses, driver
			// errors): the client gets the code's own message, the log
			// the whole error.
			var e *Error
			if errors.As(err, &e) && status != http.StatusInternalServerError {
				msg = e.Message
			} else {
				msg = ErrInternal.Message
			}
		}
		body, _ = json.Marshal(ErrorBody{Error: code, Message: msg, RequestID: requestID})
		h.Set("Content-Type", "application/json")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	return newResponse(status, h, body)
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
