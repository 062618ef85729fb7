// Package exact is the x402 "exact" scheme over EIP-3009: the payer signs a
// TransferWithAuthorization of exactly the price to the payTo address, and
// the facilitator submits it. It is the scheme every x402 client speaks and
// the only one version 1 of the protocol can express.
package exact

import (
	"fmt"
	"strings"
	"time"

	"github.com/402claw/dispatcher/x402"
)

// Name is the scheme's name in the tenant directory and on the wire.
const Name = x402.SchemeExact

// Scheme is the exact scheme over EIP-3009. The zero value is ready to use.
type Scheme struct{}

var _ x402.Scheme = Scheme{}

// New returns the scheme.
func New() Scheme { return Scheme{} }

// Name implements x402.Scheme.
func (Scheme) Name() string { return Name }

// Pricing implements x402.Scheme: the payer is charged exactly the price.
func (Scheme) Pricing() x402.Pricing { return x402.PricingFixed }

// Requirement implements x402.Scheme: the price in the network's USDC, with
// the token's EIP-712 name and version in extra.
func (Scheme) Requirement(o x402.Offer) (x402.Requirement, error) {
	return o.Requirement(Name, false)
}

// Claims implements x402.Scheme: wire scheme "exact" with no transfer
// method other than EIP-3009.
func (Scheme) Claims(accepted x402.Requirement) bool {
	return accepted.V1Expressible()
}

// Check implements x402.Scheme. The payload must be an EIP-3009
// authorization (decoded by x402.ParsePaymentPayload); the chosen
// requirement and the authorization must match req (x402.Match), and the
// authorization must be valid at now. The Grant's ID is
// x402.AuthorizationID (network, asset, payer, nonce), so the same signed
// authorization has one identity whatever its envelope. On a mismatch the
// returned Grant still carries the identity.
func (Scheme) Check(p *x402.Payment, req x402.Requirement, now time.Time) (x402.Grant, error) {
	a := p.Authorization
	if a.Nonce == "" || p.Signature == "" {
		return x402.Grant{}, fmt.Errorf("%w: the exact payload has no EIP-3009 authorization", x402.ErrInvalidPayment)
	}
	g := x402.Grant{
		Payer:       p.Payer,
		ID:          x402.AuthorizationID(p),
		Amount:      a.Value,
		ValidAfter:  p.ValidAfter(),
		ValidBefore: p.ValidBefore(),
		Signed: []string{
			strings.ToLower(a.From), strings.ToLower(a.To), canonical(a.Value),
			canonical(a.ValidAfter), canonical(a.ValidBefore), strings.ToLower(a.Nonce),
			strings.ToLower(p.Signature),
		},
	}
	if err := x402.Match(req, p); err != nil {
		return g, err
	}
	if !g.ValidBefore.After(now) {
		return g, &x402.MismatchError{Field: "authorization.validBefore", Want: "a time after " + now.UTC().Format(time.RFC3339), Got: a.ValidBefore}
	}
	if g.ValidAfter.After(now) {
		return g, &x402.MismatchError{Field: "authorization.validAfter", Want: "a time before " + now.UTC().Format(time.RFC3339), Got: a.ValidAfter}
	}
	return g, nil
}

// canonical strips leading zeros from a decimal number, so that re-encodings
// of one authorization fingerprint the same.
func canonical(s string) string {
	t := strings.TrimLeft(s, "0")
	if t == "" && s != "" {
		return "0"
	}
	return t
}
