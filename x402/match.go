package x402

import "fmt"

// MismatchError says which field of a payment differs from the server's
// requirement. It wraps ErrRequirementMismatch.
type MismatchError struct {
	// Field is the differing field: "scheme", "network", "amount", "asset",
	// "payTo", "authorization.to" or "authorization.value".
	Field string
	// Want is the server's value.
	Want string
	// Got is the payment's value.
	Got string
}

// Error describes the mismatch.
func (e *MismatchError) Error() string {
	return fmt.Sprintf("%s: %s is %q, the server requires %q", ErrRequirementMismatch, e.Field, clip(e.Got), e.Want)
}

// Unwrap returns ErrRequirementMismatch.
func (e *MismatchError) Unwrap() error { return ErrRequirementMismatch }

// Reason maps the mismatching field to the closest x402 error reason, for
// an invalidReason or challenge error text.
func (e *MismatchError) Reason() string {
	switch e.Field {
	case "scheme":
		return ReasonInvalidScheme
	case "network":
		return ReasonInvalidNetwork
	case "payTo", "authorization.to":
		return ReasonRecipientMismatch
	case "amount", "authorization.value":
		return ReasonInvalidValue
	default:
		return ReasonInvalidRequirements
	}
}

// Match checks the payment's chosen requirement against the server's own:
// scheme, network (version 1 and 2 names are equivalent), amount (compared
// as integers), asset and payTo (hex, case-insensitive) must be equal, and
// the signed authorization must pay exactly that amount to that recipient.
// The first difference is returned as a *MismatchError wrapping
// ErrRequirementMismatch. After a match, only server is sent to the
// facilitator; the client's copy is never trusted for anything else.
func Match(server Requirement, p *Payment) error {
	if p == nil {
		return &MismatchError{Field: "payment", Want: "a payment", Got: ""}
	}
	a := p.Accepted
	if a.Scheme != server.Scheme {
		return &MismatchError{Field: "scheme", Want: server.Scheme, Got: a.Scheme}
	}
	if NormalizeNetwork(a.Network) != NormalizeNetwork(server.Network) {
		return &MismatchError{Field: "network", Want: server.Network, Got: a.Network}
	}
	if !sameAmount(a.Amount, server.Amount) {
		return &MismatchError{Field: "amount", Want: server.Amount, Got: a.Amount}
	}
	if !sameHex(a.Asset, server.Asset) {
		return &MismatchError{Field: "asset", Want: server.Asset, Got: a.Asset}
	}
	if !sameHex(a.PayTo, server.PayTo) {
		return &MismatchError{Field: "payTo", Want: server.PayTo, Got: a.PayTo}
	}
	if !sameHex(p.Authorization.To, server.PayTo) {
		return &MismatchError{Field: "authorization.to", Want: server.PayTo, Got: p.Authorization.To}
	}
	if !sameAmount(p.Authorization.Value, server.Amount) {
		return &MismatchError{Field: "authorization.value", Want: server.Amount, Got: p.Authorization.Value}
	}
	return nil
}

func sameAmount(a, b string) bool {
	ca, ok1 := canonicalUint(a)
	cb, ok2 := canonicalUint(b)
	return ok1 && ok2 && ca == cb
}
