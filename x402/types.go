package x402

import "encoding/json"

// This file holds the wire types, field for field as the x402
// specifications (v1 and v2) name them. Field order follows what the
// reference clients emit, so a payload built here marshals to the same
// bytes a real client sends.

// Extensions maps an extension identifier (for example
// "payment-identifier") to its JSON value, conventionally
// {"info": {...}, "schema": {...}}. Values are kept raw so that unknown
// extensions survive a round trip untouched.
type Extensions map[string]json.RawMessage

// ResourceInfo describes the protected resource (version 2).
type ResourceInfo struct {
	// URL is the resource's URL: the request URL.
	URL string `json:"url"`
	// Description is a human-readable description.
	Description string `json:"description,omitempty"`
	// MimeType is the MIME type of the paid response.
	MimeType string `json:"mimeType,omitempty"`
}

// PaymentRequirements is one way to pay, version 2 shape: an element of
// PaymentRequired.Accepts and the "accepted" field of a PaymentPayload.
type PaymentRequirements struct {
	// Scheme is the payment scheme, "exact".
	Scheme string `json:"scheme"`
	// Network is the CAIP-2 network identifier.
	Network string `json:"network"`
	// Amount is the required amount in atomic units, as a decimal string.
	Amount string `json:"amount"`
	// Asset is the token contract address.
	Asset string `json:"asset"`
	// PayTo is the recipient address.
	PayTo string `json:"payTo"`
	// MaxTimeoutSeconds bounds the time the payment may take.
	MaxTimeoutSeconds int `json:"maxTimeoutSeconds"`
	// Extra is scheme-specific data; for exact EVM the token's EIP-712
	// domain {"name", "version"}.
	Extra map[string]any `json:"extra,omitempty"`
}

// PaymentRequired is the version 2 challenge, sent base64-encoded in the
// PAYMENT-REQUIRED header.
type PaymentRequired struct {
	// X402Version is 2.
	X402Version int `json:"x402Version"`
	// Error says why payment is required (or why a payment was refused).
	Error string `json:"error,omitempty"`
	// Resource describes the protected resource.
	Resource ResourceInfo `json:"resource"`
	// Accepts lists the ways to pay.
	Accepts []PaymentRequirements `json:"accepts"`
	// Extensions advertises protocol extensions.
	Extensions Extensions `json:"extensions,omitempty"`
}

// PaymentRequirementsV1 is one way to pay, version 1 shape: an element of
// PaymentRequiredV1.Accepts.
type PaymentRequirementsV1 struct {
	// Scheme is the payment scheme, "exact".
	Scheme string `json:"scheme"`
	// Network is the version 1 network name ("base-sepolia").
	Network string `json:"network"`
	// MaxAmountRequired is the amount in atomic units; the exact scheme
	// pays exactly this.
	MaxAmountRequired string `json:"maxAmountRequired"`
	// Resource is the resource URL.
	Resource string `json:"resource"`
	// Description is a human-readable description of the resource.
	Description string `json:"description"`
	// MimeType is the MIME type of the paid response.
	MimeType string `json:"mimeType"`
	// OutputSchema optionally describes the response.
	OutputSchema json.RawMessage `json:"outputSchema,omitempty"`
	// PayTo is the recipient address.
	PayTo string `json:"payTo"`
	// MaxTimeoutSeconds bounds the time the payment may take.
	MaxTimeoutSeconds int `json:"maxTimeoutSeconds"`
	// Asset is the token contract address.
	Asset string `json:"asset"`
	// Extra is the token's EIP-712 domain {"name", "version"}.
	Extra map[string]any `json:"extra,omitempty"`
}

// PaymentRequiredV1 is the version 1 challenge, sent as the JSON body of
// the 402 response.
type PaymentRequiredV1 struct {
	// X402Version is 1.
	X402Version int `json:"x402Version"`
	// Error says why payment is required (or why a payment was refused).
	Error string `json:"error,omitempty"`
	// Accepts lists the ways to pay.
	Accepts []PaymentRequirementsV1 `json:"accepts"`
}

// Authorization is the EIP-3009 TransferWithAuthorization message of the
// exact EVM scheme. All numbers are decimal strings, the nonce is 32 bytes
// of 0x-prefixed hex.
type Authorization struct {
	// From is the payer's address.
	From string `json:"from"`
	// To is the recipient's address.
	To string `json:"to"`
	// Value is the amount in atomic units.
	Value string `json:"value"`
	// ValidAfter is the Unix time after which the authorization is valid.
	ValidAfter string `json:"validAfter"`
	// ValidBefore is the Unix time before which it is valid.
	ValidBefore string `json:"validBefore"`
	// Nonce is a random 32-byte value, unique per token and payer.
	Nonce string `json:"nonce"`
}

// ExactEVMPayload is the "payload" of an exact EVM payment: the signed
// authorization.
type ExactEVMPayload struct {
	// Authorization is the signed EIP-3009 message.
	Authorization Authorization `json:"authorization"`
	// Signature is the 0x-prefixed EIP-712 signature (r || s || v).
	Signature string `json:"signature"`
}

// PaymentPayload is a version 2 payment, sent base64-encoded in the
// PAYMENT-SIGNATURE header.
type PaymentPayload struct {
	// X402Version is 2.
	X402Version int `json:"x402Version"`
	// Payload is the scheme payload (an ExactEVMPayload).
	Payload json.RawMessage `json:"payload"`
	// Resource echoes the challenge's resource.
	Resource *ResourceInfo `json:"resource,omitempty"`
	// Accepted is the requirement the client chose from the challenge.
	Accepted PaymentRequirements `json:"accepted"`
	// Extensions echoes (and extends) the challenge's extensions.
	Extensions Extensions `json:"extensions,omitempty"`
}

// PaymentPayloadV1 is a version 1 payment, sent base64-encoded in the
// X-PAYMENT header.
type PaymentPayloadV1 struct {
	// X402Version is 1.
	X402Version int `json:"x402Version"`
	// Scheme is the chosen scheme, "exact".
	Scheme string `json:"scheme"`
	// Network is the chosen network's version 1 name.
	Network string `json:"network"`
	// Payload is the scheme payload (an ExactEVMPayload).
	Payload json.RawMessage `json:"payload"`
}

// VerifyResponse is a facilitator's answer to /verify.
type VerifyResponse struct {
	// IsValid reports whether the payment would settle.
	IsValid bool `json:"isValid"`
	// InvalidReason names why not (one of the Reason constants, or the
	// facilitator's own code).
	InvalidReason string `json:"invalidReason,omitempty"`
	// Payer is the paying address.
	Payer string `json:"payer,omitempty"`
	// Extra carries scheme-specific results (for batch-settlement, the
	// channel's onchain snapshot: balance, totalClaimed, ...).
	Extra map[string]any `json:"extra,omitempty"`
}

// SettleResponse is a facilitator's answer to /settle, and the JSON carried
// base64-encoded in PAYMENT-RESPONSE / X-PAYMENT-RESPONSE.
type SettleResponse struct {
	// Success reports whether the transfer was executed.
	Success bool `json:"success"`
	// ErrorReason names why not; ReasonSettlementPending marks a pending
	// settlement (see Pending).
	ErrorReason string `json:"errorReason,omitempty"`
	// Payer is the paying address.
	Payer string `json:"payer,omitempty"`
	// Transaction is the transaction hash, empty when nothing was sent.
	Transaction string `json:"transaction"`
	// Network is the network the transaction is on, spelled as the
	// payment's protocol version spells it.
	Network string `json:"network"`
	// Amount is the amount settled in atomic units, for schemes whose
	// charge may be less than the signed amount (upto); "" otherwise.
	Amount string `json:"amount,omitempty"`
	// Extra carries scheme-specific results (a channel's state).
	Extra map[string]any `json:"extra,omitempty"`
}

// SettleOutcome classifies a SettleResponse.
type SettleOutcome int

const (
	// SettleFailed means nothing was transferred; the client is not charged.
	SettleFailed SettleOutcome = iota
	// SettleSucceeded means the transfer was executed.
	SettleSucceeded
	// SettlePending means the facilitator broadcast a transaction but did
	// not see it confirmed in time. The payment may still complete, so the
	// caller must not settle it again or treat it as failed; it records the
	// state (ledger status "pending") for reconciliation.
	SettlePending
)

// String returns "failed", "settled" or "pending", the ledger's status words.
func (o SettleOutcome) String() string {
	switch o {
	case SettleSucceeded:
		return "settled"
	case SettlePending:
		return "pending"
	default:
		return "failed"
	}
}

// Pending reports whether the answer is a pending settlement: success is
// false and errorReason is "settlement_pending" (the convention of the CDP
// and Circle facilitators, which may send it with HTTP 200 or 500). The
// client also maps an answer carrying "status": "pending" with success
// false to this form.
func (r *SettleResponse) Pending() bool {
	return r != nil && !r.Success && r.ErrorReason == ReasonSettlementPending
}

// Outcome classifies the answer as succeeded, pending or failed.
func (r *SettleResponse) Outcome() SettleOutcome {
	switch {
	case r == nil:
		return SettleFailed
	case r.Success:
		return SettleSucceeded
	case r.Pending():
		return SettlePending
	default:
		return SettleFailed
	}
}

// SupportedKind is one (version, scheme, network) a facilitator handles.
type SupportedKind struct {
	// X402Version is the protocol version.
	X402Version int `json:"x402Version"`
	// Scheme is the payment scheme.
	Scheme string `json:"scheme"`
	// Network is the network, spelled as X402Version spells it.
	Network string `json:"network"`
	// Extra is optional scheme-specific configuration.
	Extra map[string]any `json:"extra,omitempty"`
}

// SupportedResponse is a facilitator's answer to GET /supported.
type SupportedResponse struct {
	// Kinds lists the supported (version, scheme, network) triples.
	Kinds []SupportedKind `json:"kinds"`
	// Extensions lists the extension identifiers the facilitator implements.
	Extensions []string `json:"extensions"`
	// Signers maps CAIP-2 patterns (such as "eip155:*") to the addresses
	// the facilitator settles from.
	Signers map[string][]string `json:"signers"`
}

// FacilitatorRequestBody is the JSON body of POST /verify and /settle:
// the payment as the client sent it and the server's own requirement, both
// in the shape of the payment's protocol version.
type FacilitatorRequestBody struct {
	// X402Version is the payment's protocol version.
	X402Version int `json:"x402Version"`
	// PaymentPayload is the payment JSON as the client sent it.
	PaymentPayload json.RawMessage `json:"paymentPayload"`
	// PaymentRequirements is the server's requirement in that version's
	// shape.
	PaymentRequirements json.RawMessage `json:"paymentRequirements"`
}
