package localfacilitator

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/permit2"
)

// ParsePayment parses a payment JSON (a decoded PAYMENT-SIGNATURE, or a
// facilitator request's paymentPayload) of any scheme this facilitator
// handles. It is x402.ParsePaymentPayload, which fills Authorization,
// Signature and Payer for EIP-3009 payloads; a version 2 payment whose
// payload has the Permit2 shape (exact-permit2, upto) that it does not
// take is parsed here into the scheme-neutral envelope: Accepted (the
// client's chosen requirement), Payload (the raw scheme payload), Raw and
// Extensions, with Authorization, Signature and Payer left empty. Errors
// wrap x402.ErrInvalidPayment.
func ParsePayment(raw []byte) (*x402.Payment, error) {
	p, err := x402.ParsePaymentPayload(raw)
	if err == nil {
		return p, nil
	}
	if p2, ok := parsePermit2Envelope(raw); ok {
		return p2, nil
	}
	return nil, err
}

// DecodePayment decodes a PAYMENT-SIGNATURE or X-PAYMENT header value of
// any scheme this facilitator handles (see ParsePayment).
func DecodePayment(value string) (*x402.Payment, error) {
	p, err := x402.DecodePaymentHeader(value)
	if err == nil {
		return p, nil
	}
	raw, derr := decodeBase64(value)
	if derr != nil {
		return nil, err
	}
	if p2, ok := parsePermit2Envelope(raw); ok {
		return p2, nil
	}
	return nil, err
}

func parsePermit2Envelope(raw []byte) (*x402.Payment, bool) {
	if len(raw) > x402.MaxHeaderBytes {
		return nil, false
	}
	var pp x402.PaymentPayload
	if err := json.Unmarshal(raw, &pp); err != nil || pp.X402Version != x402.Version2 {
		return nil, false
	}
	if !permit2.HasPermit2Authorization(pp.Payload) {
		return nil, false
	}
	if _, ok := x402.EVMChainID(pp.Accepted.Network); !ok || pp.Accepted.Scheme == "" {
		return nil, false
	}
	var res x402.ResourceInfo
	if pp.Resource != nil {
		res = *pp.Resource
	}
	return &x402.Payment{
		Version:    x402.Version2,
		Accepted:   x402.RequirementFromV2(pp.Accepted, res),
		Payload:    compact(pp.Payload),
		Raw:        compact(raw),
		Extensions: pp.Extensions,
	}, true
}

// ParseRequest parses the body of POST /verify or /settle for any scheme
// this facilitator handles: x402.ParseFacilitatorRequest, and for a
// Permit2-shaped version 2 payment that it does not take, the envelope of
// ParsePayment with the requirement read as given (the upto requirement's
// amount is the maximum at verify and the charge at settle). Errors wrap
// x402.ErrInvalidPayment or x402.ErrInvalidRequirement.
func ParseRequest(body []byte) (x402.FacilitatorRequest, error) {
	req, err := x402.ParseFacilitatorRequest(body)
	if err == nil {
		return req, nil
	}
	if len(body) > x402.MaxRequestBodyBytes {
		return x402.FacilitatorRequest{}, err
	}
	var b x402.FacilitatorRequestBody
	if json.Unmarshal(body, &b) != nil {
		return x402.FacilitatorRequest{}, err
	}
	p, ok := parsePermit2Envelope(b.PaymentPayload)
	if !ok {
		return x402.FacilitatorRequest{}, err
	}
	if b.X402Version != 0 && b.X402Version != p.Version {
		return x402.FacilitatorRequest{}, fmt.Errorf("%w: x402Version %d differs from the payment's %d", x402.ErrInvalidPayment, b.X402Version, p.Version)
	}
	if len(b.PaymentRequirements) == 0 || string(b.PaymentRequirements) == "null" {
		return x402.FacilitatorRequest{}, fmt.Errorf("%w: paymentRequirements is missing", x402.ErrInvalidRequirement)
	}
	var pr x402.PaymentRequirements
	if err := json.Unmarshal(b.PaymentRequirements, &pr); err != nil {
		return x402.FacilitatorRequest{}, fmt.Errorf("%w: bad paymentRequirements: %v", x402.ErrInvalidRequirement, err)
	}
	r := x402.RequirementFromV2(pr, p.Accepted.Resource)
	if _, ok := x402.EVMChainID(r.Network); !ok || r.Scheme == "" {
		return x402.FacilitatorRequest{}, fmt.Errorf("%w: unsupported scheme %q or network %q", x402.ErrInvalidRequirement, clip(r.Scheme), clip(r.Network))
	}
	return x402.FacilitatorRequest{Payment: p, Requirement: r}, nil
}

func compact(raw []byte) json.RawMessage {
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return append(json.RawMessage(nil), raw...)
	}
	return buf.Bytes()
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

var errBase64 = errors.New("not base64")

func decodeBase64(value string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(value); err == nil {
			return b, nil
		}
	}
	return nil, errBase64
}
