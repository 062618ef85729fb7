package localfacilitator

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/eip712"
	"github.com/402claw/dispatcher/x402/permit2"
	"github.com/402claw/dispatcher/x402/upto"
)

func (s *Signer) signPermit2Version(req x402.Requirement, version int, opts SignOptions, sign func(x402.Requirement, SignOptions) (*SignedPayment, error)) (*SignedPayment, error) {
	if version != x402.Version2 {
		return nil, fmt.Errorf("localfacilitator: %s payments exist only in x402Version 2", req.Scheme)
	}
	return sign(req, opts)
}

// permit2Fields computes the fields every Permit2 payment shares, as the
// reference clients fill them: a random 256-bit decimal nonce (or
// opts.Nonce, decimal or 0x-hex), deadline now + maxTimeoutSeconds (or
// opts.ValidBefore), validAfter 0 (or opts.ValidAfter).
func permit2Fields(req x402.Requirement, opts SignOptions) (nonce, deadline, validAfter string, err error) {
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	if opts.Nonce != "" {
		if nonce, err = permit2.CanonicalNonce(opts.Nonce); err != nil {
			return "", "", "", fmt.Errorf("localfacilitator: %w", err)
		}
	} else {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", "", "", fmt.Errorf("localfacilitator: nonce: %w", err)
		}
		nonce = new(big.Int).SetBytes(b[:]).String()
	}
	deadline = strconv.FormatInt(now.Unix()+int64(req.MaxTimeoutSeconds), 10)
	if opts.ValidBefore != nil {
		deadline = strconv.FormatInt(opts.ValidBefore.Unix(), 10)
	}
	validAfter = "0"
	if opts.ValidAfter != nil {
		validAfter = strconv.FormatInt(opts.ValidAfter.Unix(), 10)
	}
	return nonce, deadline, validAfter, nil
}

// SignPermit2 signs an exact-permit2 payment (version 2): a Permit2
// PermitWitnessTransferFrom of exactly req.Amount of req.Asset, spender
// the x402 exact Permit2 proxy, witness {to: req.PayTo, validAfter}, in
// the same shape and field order as the reference client (so, with the
// same nonce and time, the same bytes). opts.Nonce is the Permit2 nonce
// (decimal or 0x-hex); opts.ValidBefore sets the deadline.
func (s *Signer) SignPermit2(req x402.Requirement, opts SignOptions) (*SignedPayment, error) {
	nonce, deadline, validAfter, err := permit2Fields(req, opts)
	if err != nil {
		return nil, err
	}
	a := permit2.Authorization{
		From:      s.address,
		Permitted: permit2.TokenPermissions{Token: req.Asset, Amount: req.Amount},
		Spender:   permit2.ExactProxy,
		Nonce:     nonce,
		Deadline:  deadline,
		Witness:   permit2.Witness{To: req.PayTo, ValidAfter: validAfter},
	}
	sig, err := s.SignPermit2Authorization(req.Network, a)
	if err != nil {
		return nil, err
	}
	return s.wrapV2(req, opts, permit2.Payload{Signature: sig, Permit2Authorization: a}, sig)
}

// SignUpto signs an upto payment (version 2): a Permit2
// PermitWitnessTransferFrom of req.Amount (the maximum), spender the x402
// upto Permit2 proxy, witness {to: req.PayTo, facilitator:
// req.Extra.facilitatorAddress, validAfter}, as the reference client does.
func (s *Signer) SignUpto(req x402.Requirement, opts SignOptions) (*SignedPayment, error) {
	facilitator := req.ExtraString(upto.ExtraFacilitatorAddress)
	if facilitator == "" {
		return nil, fmt.Errorf("%w: upto requirement without extra.facilitatorAddress", x402.ErrInvalidRequirement)
	}
	nonce, deadline, validAfter, err := permit2Fields(req, opts)
	if err != nil {
		return nil, err
	}
	a := upto.Authorization{
		From:      s.address,
		Permitted: permit2.TokenPermissions{Token: req.Asset, Amount: req.Amount},
		Spender:   permit2.UptoProxy,
		Nonce:     nonce,
		Deadline:  deadline,
		Witness:   upto.Witness{To: req.PayTo, Facilitator: facilitator, ValidAfter: validAfter},
	}
	sig, err := s.SignUptoAuthorization(req.Network, a)
	if err != nil {
		return nil, err
	}
	return s.wrapV2(req, opts, upto.Payload{Signature: sig, Permit2Authorization: a}, sig)
}

// SignPermit2Authorization signs an exact-permit2 authorization on
// network's chain; like SignAuthorization it signs whatever it is given.
func (s *Signer) SignPermit2Authorization(network string, a permit2.Authorization) (string, error) {
	chainID, ok := x402.EVMChainID(network)
	if !ok {
		return "", fmt.Errorf("localfacilitator: network %q is not an EVM network", network)
	}
	d, err := a.Digest(chainID)
	if err != nil {
		return "", fmt.Errorf("localfacilitator: %w", err)
	}
	return eip712.Sign(s.key, d)
}

// SignUptoAuthorization signs an upto authorization on network's chain;
// it signs whatever it is given.
func (s *Signer) SignUptoAuthorization(network string, a upto.Authorization) (string, error) {
	chainID, ok := x402.EVMChainID(network)
	if !ok {
		return "", fmt.Errorf("localfacilitator: network %q is not an EVM network", network)
	}
	d, err := a.Digest(chainID)
	if err != nil {
		return "", fmt.Errorf("localfacilitator: %w", err)
	}
	return eip712.Sign(s.key, d)
}

// wrapV2 wraps a scheme payload in a version 2 PaymentPayload.
func (s *Signer) wrapV2(req x402.Requirement, opts SignOptions, payload any, sig string) (*SignedPayment, error) {
	raw, err := marshalJSON(payload)
	if err != nil {
		return nil, err
	}
	pp := x402.PaymentPayload{X402Version: x402.Version2, Payload: raw, Accepted: req.V2()}
	if req.Resource.URL != "" {
		res := req.Resource
		pp.Resource = &res
	}
	if opts.PaymentID != "" {
		id, err := json.Marshal(opts.PaymentID)
		if err != nil {
			return nil, err
		}
		pp.Extensions = x402.Extensions{
			x402.ExtensionPaymentIdentifier: json.RawMessage(`{"info":{"id":` + string(id) + `}}`),
		}
	}
	b, err := marshalJSON(pp)
	if err != nil {
		return nil, err
	}
	return &SignedPayment{
		Version:   x402.Version2,
		Header:    x402.HeaderPaymentSignature,
		Value:     base64.StdEncoding.EncodeToString(b),
		JSON:      b,
		Signature: strings.ToLower(sig),
		Payload:   raw,
	}, nil
}
