package x402

import (
	"encoding/base64"
	"fmt"
)

// EncodeSettleResponse encodes a settlement response as a PAYMENT-RESPONSE
// or X-PAYMENT-RESPONSE header value: standard base64 of its JSON.
func EncodeSettleResponse(r *SettleResponse) (string, error) {
	if r == nil {
		return "", fmt.Errorf("%w: nil response", ErrInvalidSettleResponse)
	}
	b, err := marshalJSON(r)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidSettleResponse, err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// DecodeSettleResponse decodes a PAYMENT-RESPONSE or X-PAYMENT-RESPONSE
// header value (standard or URL-safe base64, padded or not). Errors wrap
// ErrInvalidSettleResponse.
func DecodeSettleResponse(value string) (*SettleResponse, error) {
	raw, err := decodeBase64Header(value)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidSettleResponse, err)
	}
	r, err := ParseSettleResponse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidSettleResponse, err)
	}
	return r, nil
}

// SettlementHeader returns the header name and value that carry a
// settlement response back to the client who sent p: PAYMENT-RESPONSE for
// version 2, X-PAYMENT-RESPONSE for version 1. The response's network is
// respelled the way the payment's version spells it, and its payer filled
// from the payment when the facilitator left it empty. Send it whether
// settlement succeeded or not.
func SettlementHeader(p *Payment, r *SettleResponse) (name, value string, err error) {
	if p == nil || r == nil {
		return "", "", fmt.Errorf("%w: missing payment or response", ErrInvalidSettleResponse)
	}
	out := *r
	network := out.Network
	if network == "" {
		network = p.Accepted.Network
	}
	out.Network = NetworkForVersion(network, p.Version)
	if out.Payer == "" {
		out.Payer = p.Payer
	}
	value, err = EncodeSettleResponse(&out)
	if err != nil {
		return "", "", err
	}
	return p.ResponseHeader(), value, nil
}
