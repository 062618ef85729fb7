package x402

import (
	"context"
	"time"

	"github.com/shopspring/decimal"
)

// Pricing says how a scheme's requirement amount relates to what the
// payer is finally charged.
type Pricing int

const (
	// PricingFixed: the payer is charged exactly the requirement's amount
	// (exact, exact-permit2).
	PricingFixed Pricing = iota
	// PricingMaximum: the requirement's amount is a ceiling; the worker
	// reports the charge after doing the work (upto).
	PricingMaximum
	// PricingChannel: cumulative vouchers against a deposit; each request
	// is charged at most the requirement's amount (batch-settlement).
	PricingChannel
)

// Offer is what one priced endpoint asks for: the inputs from which a
// Scheme builds its accepts entry.
type Offer struct {
	// Network is the CAIP-2 network (or version 1 name) to be paid on.
	Network string
	// Price is the fixed price in USD (PricingFixed schemes).
	Price decimal.Decimal
	// MaxPrice is the ceiling in USD (PricingMaximum) or the per-request
	// maximum (PricingChannel); zero means Price.
	MaxPrice decimal.Decimal
	// PayTo is the recipient address.
	PayTo string
	// Resource describes the protected resource (URL, description, MIME
	// type).
	Resource ResourceInfo
	// MaxTimeoutSeconds bounds the payment; zero means
	// DefaultMaxTimeoutSeconds.
	MaxTimeoutSeconds int
}

// Requirement builds the USDC requirement every EVM scheme starts from:
// scheme, the offer's network, payTo, resource and timeout, the token's
// EIP-712 name and version in Extra (never nil), and as amount the price,
// or with ceiling the maximum (MaxPrice, Price when zero). A scheme then
// adds its own extra fields. Errors are NewRequirement's.
func (o Offer) Requirement(scheme string, ceiling bool) (Requirement, error) {
	price := o.Price
	if ceiling && !o.MaxPrice.IsZero() {
		price = o.MaxPrice
	}
	req, err := NewRequirement(RequirementParams{
		Network:           o.Network,
		Price:             price,
		PayTo:             o.PayTo,
		Resource:          o.Resource.URL,
		Description:       o.Resource.Description,
		MimeType:          o.Resource.MimeType,
		MaxTimeoutSeconds: o.MaxTimeoutSeconds,
	})
	if err != nil {
		return Requirement{}, err
	}
	req.Scheme = scheme
	if req.Extra == nil {
		req.Extra = map[string]any{}
	}
	return req, nil
}

// Grant is what a scheme reads from a payment it has decoded and checked:
// who pays, how much was signed, and what identifies the authorization.
type Grant struct {
	// Payer is the paying address.
	Payer string
	// ID identifies the signed authorization: two payments with the same
	// ID spend the same authorization (EIP-3009 or Permit2 nonce, channel
	// and cumulative amount), whatever their envelope. It is the
	// authorization identity used for idempotency and is unique across
	// tenants, so it is globally scoped.
	ID string
	// Amount is the signed amount in atomic units (the maximum for
	// PricingMaximum, the per-request increment for PricingChannel).
	Amount string
	// ValidAfter and ValidBefore bound when the authorization can settle;
	// zero when the scheme has no such bound.
	ValidAfter, ValidBefore time.Time
	// Signed lists the canonical text of every signed field and the
	// signature, in a fixed order: a request's fingerprint covers them, so
	// a re-encoding of the same payment fingerprints the same and another
	// authorization does not.
	Signed []string
}

// Scheme is one way to pay for a request: exact over EIP-3009, exact over
// Permit2, upto, batch-settlement. A new scheme is a new type passing the
// x402/schemetest conformance suite; schemes are handed to the payment
// stage in its configuration, never registered globally.
type Scheme interface {
	// Name is the scheme's name in the tenant directory ("exact",
	// "exact-permit2", "upto", "batch-settlement").
	Name() string
	// Pricing says how the requirement's amount relates to the charge.
	Pricing() Pricing
	// Requirement builds the server's accepts entry for an offer: the wire
	// scheme, amount, asset, payTo and the scheme's extra fields. Errors
	// wrap ErrInvalidRequirement, ErrInvalidPrice or ErrUnknownNetwork.
	Requirement(o Offer) (Requirement, error)
	// Claims reports whether a client's chosen requirement (a payment's
	// Accepted) is meant for this scheme: the same wire scheme and, where
	// two schemes share one (exact over EIP-3009 or Permit2), the same
	// transfer method.
	Claims(accepted Requirement) bool
	// Check decodes p's scheme payload and checks it against req, the
	// server's own requirement for this scheme, at time now: everything a
	// facilitator would refuse that can be seen without a chain
	// (recipient, amount, asset, validity window, payload shape). An
	// undecodable payload wraps ErrInvalidPayment (400); a payload that
	// does not satisfy req wraps ErrRequirementMismatch (402 naming the
	// field). Check never calls out.
	Check(p *Payment, req Requirement, now time.Time) (Grant, error)
}

// LocalVerifier is an optional ability of a Scheme: verifying a payment
// without a facilitator round trip (a batch-settlement voucher against the
// mirrored channel state, or a signature the gateway can recover itself).
type LocalVerifier interface {
	VerifyLocal(ctx context.Context, p *Payment, req Requirement) (*VerifyResponse, error)
}
