package x402

import "errors"

// Protocol versions.
const (
	// Version1 is the first protocol generation: X-PAYMENT header, JSON
	// challenge body, network names such as "base-sepolia".
	Version1 = 1
	// Version2 is the second protocol generation: PAYMENT-REQUIRED and
	// PAYMENT-SIGNATURE headers, CAIP-2 network identifiers.
	Version2 = 2
)

// HTTP header names. Go canonicalises header keys, so these work with
// http.Header.Get and Set whatever their case here.
const (
	// HeaderPaymentRequired carries the version 2 challenge: standard base64
	// of the PaymentRequired JSON.
	HeaderPaymentRequired = "PAYMENT-REQUIRED"
	// HeaderPaymentSignature carries a version 2 payment: base64 of the
	// PaymentPayload JSON.
	HeaderPaymentSignature = "PAYMENT-SIGNATURE"
	// HeaderPaymentResponse carries the version 2 settlement response.
	HeaderPaymentResponse = "PAYMENT-RESPONSE"
	// HeaderXPayment carries a version 1 payment.
	HeaderXPayment = "X-PAYMENT"
	// HeaderXPaymentResponse carries the version 1 settlement response.
	HeaderXPaymentResponse = "X-PAYMENT-RESPONSE"
	// HeaderPaymentIdempotencyKey is the preferred client idempotency header,
	// also echoed on responses by the dispatcher.
	HeaderPaymentIdempotencyKey = "X-Payment-Idempotency-Key"
	// HeaderIdempotencyKey is the generic idempotency header, used when
	// HeaderPaymentIdempotencyKey is absent.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderPaymentDeduped marks a response replayed from the idempotency
	// store (value "true").
	HeaderPaymentDeduped = "X-Payment-Deduped"
)

// Protocol identifiers.
const (
	// SchemeExact is the only payment scheme this package accepts: an
	// EIP-3009 TransferWithAuthorization of exactly the required amount.
	SchemeExact = "exact"
	// ExtensionPaymentIdentifier is the key of the version 2
	// payment-identifier extension, whose info.id is a client-chosen
	// idempotency key.
	ExtensionPaymentIdentifier = "payment-identifier"
)

// Default challenge error messages, as the reference servers word them.
const (
	// DefaultErrorV2 is the error of a version 2 challenge without a payment.
	DefaultErrorV2 = "PAYMENT-SIGNATURE header is required"
	// DefaultErrorV1 is the error of a version 1 challenge without a payment.
	DefaultErrorV1 = "X-PAYMENT header is required"
)

// Limits applied to untrusted input.
const (
	// MaxHeaderBytes bounds the size of a payment header value (and of a
	// settlement response header value) that the decoders accept. A real
	// client's header is about 1.3 KB.
	MaxHeaderBytes = 16 << 10
	// MaxResponseBytes bounds a facilitator answer body that the client reads.
	MaxResponseBytes = 1 << 20
	// MaxRequestBodyBytes bounds a facilitator request body that
	// ParseFacilitatorRequest accepts.
	MaxRequestBodyBytes = 64 << 10
	// DefaultMaxTimeoutSeconds is the maxTimeoutSeconds of a requirement
	// whose params leave it zero.
	DefaultMaxTimeoutSeconds = 60
)

// Error reasons used in invalidReason / errorReason fields, as named by the
// x402 specification (section 9) and the reference facilitators.
const (
	// ReasonInsufficientFunds: the payer's balance is too low.
	ReasonInsufficientFunds = "insufficient_funds"
	// ReasonInvalidSignature: the signature does not recover to the payer.
	ReasonInvalidSignature = "invalid_exact_evm_payload_signature"
	// ReasonRecipientMismatch: the authorization pays someone else.
	ReasonRecipientMismatch = "invalid_exact_evm_payload_recipient_mismatch"
	// ReasonInvalidValue: the authorized value is not the required amount.
	ReasonInvalidValue = "invalid_exact_evm_payload_authorization_value"
	// ReasonValidAfter: the authorization is not valid yet.
	ReasonValidAfter = "invalid_exact_evm_payload_authorization_valid_after"
	// ReasonValidBefore: the authorization has expired.
	ReasonValidBefore = "invalid_exact_evm_payload_authorization_valid_before"
	// ReasonNonceUsed: the authorization's nonce was already settled.
	ReasonNonceUsed = "invalid_exact_evm_payload_authorization_nonce_used"
	// ReasonInvalidNetwork: the network is not supported or differs.
	ReasonInvalidNetwork = "invalid_network"
	// ReasonInvalidPayload: the payment payload is malformed.
	ReasonInvalidPayload = "invalid_payload"
	// ReasonInvalidRequirements: the payment requirements are malformed or
	// the payment does not match them.
	ReasonInvalidRequirements = "invalid_payment_requirements"
	// ReasonInvalidScheme: the scheme is not supported or differs.
	ReasonInvalidScheme = "invalid_scheme"
	// ReasonInvalidVersion: the x402Version is not supported.
	ReasonInvalidVersion = "invalid_x402_version"
	// ReasonUnexpectedVerifyError: verification failed for another reason.
	ReasonUnexpectedVerifyError = "unexpected_verify_error"
	// ReasonUnexpectedSettleError: settlement failed for another reason.
	ReasonUnexpectedSettleError = "unexpected_settle_error"
	// ReasonSettlementPending: the settlement transaction was broadcast but
	// not confirmed in time. It is not a failure; see SettleResponse.Pending.
	ReasonSettlementPending = "settlement_pending"
)

// Sentinel errors. Functions wrap them with detail; test with errors.Is.
var (
	// ErrNoPayment means the request carries neither PAYMENT-SIGNATURE nor
	// X-PAYMENT: the caller answers with a challenge.
	ErrNoPayment = errors.New("x402: no payment header")
	// ErrInvalidPayment means a payment header could not be decoded
	// (bad base64 or JSON, wrong types, unknown version or scheme, missing
	// or out-of-range fields, too large). The dispatcher answers 400
	// invalid_payment.
	ErrInvalidPayment = errors.New("x402: invalid payment")
	// ErrRequirementMismatch means the payment's chosen requirement differs
	// from the server's (see MismatchError for the field).
	ErrRequirementMismatch = errors.New("x402: payment does not match the requirement")
	// ErrFacilitatorUnavailable means the facilitator gave no usable answer:
	// connection error, timeout, a 5xx or other status without a verify or
	// settle body, an empty or unparseable body. The dispatcher answers 502
	// facilitator_unavailable and does not call the worker.
	ErrFacilitatorUnavailable = errors.New("x402: facilitator unavailable")
	// ErrInvalidPrice means a price cannot be expressed in the asset's
	// atomic units (negative, zero, or more decimals than the asset has).
	ErrInvalidPrice = errors.New("x402: invalid price")
	// ErrUnknownNetwork means a network name is not in the package's table.
	ErrUnknownNetwork = errors.New("x402: unknown network")
	// ErrInvalidRequirement means requirement params or a requirement
	// received from a peer are malformed.
	ErrInvalidRequirement = errors.New("x402: invalid requirement")
	// ErrInvalidSettleResponse means a settlement response header could not
	// be decoded.
	ErrInvalidSettleResponse = errors.New("x402: invalid settlement response")
)
