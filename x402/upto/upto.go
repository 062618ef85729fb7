package upto

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/eip712"
	"github.com/402claw/dispatcher/x402/permit2"
)

// Wire names.
const (
	// Name is the scheme's name in the tenant directory and on the wire.
	Name = "upto"
	// ExtraFacilitatorAddress is the requirement extra key (and /supported
	// kind extra key) naming the facilitator allowed to settle.
	ExtraFacilitatorAddress = "facilitatorAddress"
	// WitnessType is the EIP-712 type of the upto witness.
	WitnessType = "Witness(address to,address facilitator,uint256 validAfter)"
)

// Error reasons, as the reference x402 facilitators name them.
const (
	// ReasonSettlementExceedsAmount: the charge is above the signed maximum.
	ReasonSettlementExceedsAmount = "invalid_upto_evm_payload_settlement_exceeds_amount"
	// ReasonFacilitatorMismatch: witness.facilitator is not the
	// requirement's facilitatorAddress.
	ReasonFacilitatorMismatch = "upto_facilitator_mismatch"
	// ReasonUnauthorizedFacilitator: witness.facilitator is not this
	// facilitator.
	ReasonUnauthorizedFacilitator = "upto_unauthorized_facilitator"
)

// Witness is the upto witness.
type Witness struct {
	// To is the recipient (payTo).
	To string `json:"to"`
	// Facilitator is the only address allowed to settle.
	Facilitator string `json:"facilitator"`
	// ValidAfter is the Unix time from which the proxy accepts it.
	ValidAfter string `json:"validAfter"`
}

// Authorization is the signed message of an upto payment, in the field
// order the reference clients send.
type Authorization struct {
	// From is the payer.
	From string `json:"from"`
	// Permitted is the token and the maximum amount.
	Permitted permit2.TokenPermissions `json:"permitted"`
	// Spender is permit2.UptoProxy.
	Spender string `json:"spender"`
	// Nonce is a uint256 decimal, single-use per payer.
	Nonce string `json:"nonce"`
	// Deadline is the Unix time after which it cannot settle.
	Deadline string `json:"deadline"`
	// Witness binds recipient, facilitator and validAfter.
	Witness Witness `json:"witness"`
}

// Payload is an upto payment's scheme payload.
type Payload struct {
	// Signature is the 65-byte EIP-712 signature, 0x-prefixed hex.
	Signature string `json:"signature"`
	// Permit2Authorization is the signed message.
	Permit2Authorization Authorization `json:"permit2Authorization"`
}

// Permit returns the fields shared with the other Permit2 schemes.
func (a Authorization) Permit() permit2.Permit {
	return permit2.Permit{
		From: a.From, Token: a.Permitted.Token, Amount: a.Permitted.Amount, Spender: a.Spender,
		Nonce: a.Nonce, Deadline: a.Deadline, To: a.Witness.To, ValidAfter: a.Witness.ValidAfter,
	}
}

// Digest returns the EIP-712 digest the payer signed, on chainID.
func (a Authorization) Digest(chainID int64) ([32]byte, error) {
	w, err := permit2.HashStruct(WitnessType,
		permit2.Field{Name: "witness.to", Value: a.Witness.To, Address: true},
		permit2.Field{Name: "witness.facilitator", Value: a.Witness.Facilitator, Address: true},
		permit2.Field{Name: "witness.validAfter", Value: a.Witness.ValidAfter})
	if err != nil {
		return [32]byte{}, err
	}
	return a.Permit().Digest(chainID, WitnessType, w)
}

// DecodePayload decodes and normalizes an upto scheme payload: every field
// present and well formed, no unknown fields, integers in canonical
// decimal form. Errors wrap x402.ErrInvalidPayment.
func DecodePayload(raw json.RawMessage) (*Payload, error) {
	var pl Payload
	if err := permit2.DecodeJSON(raw, &pl); err != nil {
		return nil, err
	}
	if err := permit2.CheckSignature(pl.Signature); err != nil {
		return nil, err
	}
	a := &pl.Permit2Authorization
	if _, err := eip712.HexBytes(a.Witness.Facilitator, 20); err != nil {
		return nil, fmt.Errorf("%w: permit2Authorization.witness.facilitator %q is not an address", x402.ErrInvalidPayment, clip(a.Witness.Facilitator))
	}
	p, err := a.Permit().Normalize()
	if err != nil {
		return nil, err
	}
	a.Permitted.Amount, a.Nonce, a.Deadline, a.Witness.ValidAfter = p.Amount, p.Nonce, p.Deadline, p.ValidAfter
	return &pl, nil
}

// Config configures the scheme.
type Config struct {
	// FacilitatorAddress is the address of the facilitator that settles
	// (extra.facilitatorAddress of the accepts entry; clients sign it into
	// the witness). Take it from the facilitator's /supported answer
	// (FacilitatorAddress) or the local facilitator's Address. Required.
	FacilitatorAddress string
}

// Scheme is upto (x402.Scheme). It is immutable and safe for concurrent
// use.
type Scheme struct {
	facilitator string
}

var _ x402.Scheme = (*Scheme)(nil)

// New returns the upto scheme for one facilitator.
func New(cfg Config) (*Scheme, error) {
	addr, err := eip712.ChecksumAddress(strings.TrimSpace(cfg.FacilitatorAddress))
	if err != nil {
		return nil, fmt.Errorf("%w: upto: FacilitatorAddress %q is not an address", x402.ErrInvalidRequirement, cfg.FacilitatorAddress)
	}
	return &Scheme{facilitator: addr}, nil
}

// FacilitatorAddress returns the address a facilitator announces for upto
// payments on a network in its /supported answer (a kind with scheme
// "upto" and extra.facilitatorAddress), and whether there is one.
func FacilitatorAddress(s *x402.SupportedResponse, network string) (string, bool) {
	if s == nil {
		return "", false
	}
	want := x402.NormalizeNetwork(network)
	for _, k := range s.Kinds {
		if k.Scheme != Name || x402.NormalizeNetwork(k.Network) != want {
			continue
		}
		if a, ok := k.Extra[ExtraFacilitatorAddress].(string); ok && a != "" {
			return a, true
		}
	}
	return "", false
}

// Name returns "upto".
func (*Scheme) Name() string { return Name }

// Pricing returns x402.PricingMaximum: the amount is a ceiling, the worker
// reports the charge.
func (*Scheme) Pricing() x402.Pricing { return x402.PricingMaximum }

// Facilitator returns the configured facilitator address (EIP-55).
func (s *Scheme) Facilitator() string { return s.facilitator }

// Requirement builds the accepts entry: scheme "upto", the offer's
// MaxPrice (Price when zero) in the network's USDC as the amount, extra
// {name, version, facilitatorAddress}.
func (s *Scheme) Requirement(o x402.Offer) (x402.Requirement, error) {
	req, err := o.Requirement(Name, true)
	if err != nil {
		return x402.Requirement{}, err
	}
	req.Extra[ExtraFacilitatorAddress] = s.facilitator
	return req, nil
}

// Claims reports whether a client's chosen requirement is upto.
func (*Scheme) Claims(accepted x402.Requirement) bool { return accepted.Scheme == Name }

// Check decodes the payment's upto payload and checks it against req (the
// server's entry: amount is the maximum) at now: spender UptoProxy, token
// the asset, permitted amount exactly the maximum, witness.to the payTo,
// witness.facilitator the configured facilitator (and req's
// facilitatorAddress), validAfter passed, deadline not within
// permit2.DeadlineBuffer. The Grant's Amount is the maximum.
func (s *Scheme) Check(p *x402.Payment, req x402.Requirement, now time.Time) (x402.Grant, error) {
	if p == nil {
		return x402.Grant{}, fmt.Errorf("%w: no payment", x402.ErrInvalidPayment)
	}
	pl, err := DecodePayload(p.Payload)
	if err != nil {
		return x402.Grant{}, err
	}
	if err := permit2.CheckNetwork(p, req); err != nil {
		return x402.Grant{}, err
	}
	a := pl.Permit2Authorization
	permit := a.Permit()
	if err := permit.Check(req, permit2.UptoProxy, now); err != nil {
		return x402.Grant{}, err
	}
	want := s.facilitator
	if r := req.ExtraString(ExtraFacilitatorAddress); r != "" && !strings.EqualFold(r, want) {
		return x402.Grant{}, fmt.Errorf("%w: upto: requirement facilitatorAddress %s is not the scheme's %s", x402.ErrInvalidRequirement, r, want)
	}
	if !strings.EqualFold(a.Witness.Facilitator, want) {
		return x402.Grant{}, &x402.MismatchError{Field: permit2.FieldFacilitator, Want: want, Got: a.Witness.Facilitator}
	}
	return permit.Grant(req.Network, pl.Signature, a.Witness.Facilitator), nil
}

// Reason maps an error of Check (or of the facilitator's checks) to the
// reference facilitators' reason.
func Reason(err error) string {
	var me *x402.MismatchError
	if errors.As(err, &me) && me.Field == permit2.FieldFacilitator {
		return ReasonFacilitatorMismatch
	}
	return permit2.Reason(err)
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
