package permit2

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/402claw/dispatcher/x402"
)

// Name is the scheme's name in the tenant directory.
const Name = "exact-permit2"

// WitnessType is the EIP-712 type of the exact scheme's witness, as the
// x402 exact Permit2 proxy and the reference clients define it.
const WitnessType = "Witness(address to,uint256 validAfter)"

// TokenPermissions is permitted: the token and the amount.
type TokenPermissions struct {
	// Token is the ERC-20 contract.
	Token string `json:"token"`
	// Amount is the amount in atomic units.
	Amount string `json:"amount"`
}

// Witness is the exact scheme's witness: the recipient and the start of
// validity.
type Witness struct {
	// To is the recipient (the requirement's payTo).
	To string `json:"to"`
	// ValidAfter is the Unix time from which the proxy accepts it.
	ValidAfter string `json:"validAfter"`
}

// Authorization is the signed message of an exact-permit2 payment, in the
// field order the reference clients send.
type Authorization struct {
	// From is the payer.
	From string `json:"from"`
	// Permitted is the token and amount.
	Permitted TokenPermissions `json:"permitted"`
	// Spender is ExactProxy.
	Spender string `json:"spender"`
	// Nonce is a uint256 decimal, single-use per payer.
	Nonce string `json:"nonce"`
	// Deadline is the Unix time after which it cannot settle.
	Deadline string `json:"deadline"`
	// Witness binds the recipient and validAfter.
	Witness Witness `json:"witness"`
}

// Payload is an exact-permit2 payment's scheme payload.
type Payload struct {
	// Signature is the 65-byte EIP-712 signature, 0x-prefixed hex.
	Signature string `json:"signature"`
	// Permit2Authorization is the signed message.
	Permit2Authorization Authorization `json:"permit2Authorization"`
}

// Permit returns the shared fields of the authorization.
func (a Authorization) Permit() Permit {
	return Permit{
		From: a.From, Token: a.Permitted.Token, Amount: a.Permitted.Amount, Spender: a.Spender,
		Nonce: a.Nonce, Deadline: a.Deadline, To: a.Witness.To, ValidAfter: a.Witness.ValidAfter,
	}
}

// Digest returns the EIP-712 digest the payer signed, on chainID.
func (a Authorization) Digest(chainID int64) ([32]byte, error) {
	w, err := HashStruct(WitnessType,
		Field{Name: "witness.to", Value: a.Witness.To, Address: true},
		Field{Name: "witness.validAfter", Value: a.Witness.ValidAfter})
	if err != nil {
		return [32]byte{}, err
	}
	return a.Permit().Digest(chainID, WitnessType, w)
}

// DecodePayload decodes and normalizes an exact-permit2 scheme payload
// (the payment's "payload" object): every field present and well formed,
// no unknown fields, integers in canonical decimal form. Errors wrap
// x402.ErrInvalidPayment.
func DecodePayload(raw json.RawMessage) (*Payload, error) {
	var pl Payload
	if err := DecodeJSON(raw, &pl); err != nil {
		return nil, err
	}
	if err := CheckSignature(pl.Signature); err != nil {
		return nil, err
	}
	p, err := pl.Permit2Authorization.Permit().Normalize()
	if err != nil {
		return nil, err
	}
	a := &pl.Permit2Authorization
	a.Permitted.Amount, a.Nonce, a.Deadline, a.Witness.ValidAfter = p.Amount, p.Nonce, p.Deadline, p.ValidAfter
	return &pl, nil
}

// Scheme is exact over Permit2 (x402.Scheme). The zero value is ready to
// use; it holds no state.
type Scheme struct{}

var _ x402.Scheme = Scheme{}

// New returns the exact-permit2 scheme.
func New() Scheme { return Scheme{} }

// Name returns "exact-permit2".
func (Scheme) Name() string { return Name }

// Pricing returns x402.PricingFixed: the payer is charged the price.
func (Scheme) Pricing() x402.Pricing { return x402.PricingFixed }

// Requirement builds the accepts entry: scheme "exact" on the offer's
// network, the price in the network's USDC, extra {name, version,
// assetTransferMethod: "permit2"}.
func (Scheme) Requirement(o x402.Offer) (x402.Requirement, error) {
	req, err := o.Requirement(x402.SchemeExact, false)
	if err != nil {
		return x402.Requirement{}, err
	}
	req.Extra[ExtraAssetTransferMethod] = TransferMethod
	return req, nil
}

// Claims reports whether a client's chosen requirement is exact with
// assetTransferMethod "permit2".
func (Scheme) Claims(accepted x402.Requirement) bool {
	return accepted.Scheme == x402.SchemeExact && accepted.ExtraString(ExtraAssetTransferMethod) == TransferMethod
}

// Check decodes the payment's Permit2 payload and checks it against req
// at now: spender ExactProxy, token the asset, amount exactly req.Amount,
// witness.to the payTo, validAfter passed, deadline not within
// DeadlineBuffer. The signature is left to the facilitator. An
// undecodable payload wraps x402.ErrInvalidPayment; a mismatch is an
// *x402.MismatchError.
func (Scheme) Check(p *x402.Payment, req x402.Requirement, now time.Time) (x402.Grant, error) {
	if p == nil {
		return x402.Grant{}, fmt.Errorf("%w: no payment", x402.ErrInvalidPayment)
	}
	pl, err := DecodePayload(p.Payload)
	if err != nil {
		return x402.Grant{}, err
	}
	if err := CheckNetwork(p, req); err != nil {
		return x402.Grant{}, err
	}
	permit := pl.Permit2Authorization.Permit()
	if err := permit.Check(req, ExactProxy, now); err != nil {
		return x402.Grant{}, err
	}
	return permit.Grant(req.Network, pl.Signature), nil
}

// CheckNetwork refuses a payment whose chosen network differs from the
// requirement's (when the payment names one): a signature's chain id is
// the requirement's, so it would not verify anyway, but the mismatch is
// the clearer error.
func CheckNetwork(p *x402.Payment, req x402.Requirement) error {
	if p.Accepted.Network != "" && x402.NormalizeNetwork(p.Accepted.Network) != x402.NormalizeNetwork(req.Network) {
		return &x402.MismatchError{Field: "network", Want: req.Network, Got: p.Accepted.Network}
	}
	if _, ok := x402.EVMChainID(req.Network); !ok {
		return &x402.MismatchError{Field: "network", Want: "an EVM network", Got: req.Network}
	}
	return nil
}

// HasPermit2Authorization reports whether a scheme payload carries a
// permit2Authorization object (the Permit2 shape, as opposed to EIP-3009's
// authorization): how a facilitator tells the exact scheme's two transfer
// methods apart when the requirement leaves assetTransferMethod out.
func HasPermit2Authorization(raw json.RawMessage) bool {
	var probe struct {
		P json.RawMessage `json:"permit2Authorization"`
	}
	return json.Unmarshal(raw, &probe) == nil && len(probe.P) > 0 && !strings.EqualFold(string(probe.P), "null")
}
