package x402

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Facilitator verifies and settles payments: a remote service
// (FacilitatorClient) or an in-process one (localfacilitator). It is the
// port the payment step calls; implementations are safe for concurrent use.
//
// A well-formed answer is returned with a nil error whatever it says: an
// invalid payment is a VerifyResponse with IsValid false, a failed or
// pending settlement a SettleResponse with Success false. An error means
// there was no usable answer and wraps ErrFacilitatorUnavailable (or
// ErrInvalidPayment / ErrInvalidRequirement when the request itself cannot
// be formed).
type Facilitator interface {
	// Verify checks that the payment would settle for the requirement,
	// without moving funds.
	Verify(ctx context.Context, req FacilitatorRequest) (*VerifyResponse, error)
	// Settle executes the payment. Callers settle a given payment at most
	// once; a pending answer is recorded, never settled again blindly.
	Settle(ctx context.Context, req FacilitatorRequest) (*SettleResponse, error)
	// Supported lists the kinds of payment the facilitator handles.
	Supported(ctx context.Context) (*SupportedResponse, error)
}

// FacilitatorRequest is the input of Verify and Settle: the client's
// payment and the server's own requirement (after Match).
type FacilitatorRequest struct {
	// Payment is the decoded payment; its Raw JSON is forwarded.
	Payment *Payment
	// Requirement is the server's requirement, sent in the payment's
	// version's shape.
	Requirement Requirement
}

// Body renders the request as the JSON body of POST /verify and /settle:
// {"x402Version", "paymentPayload", "paymentRequirements"}, with the
// payment as the client sent it and the requirement in the payment's
// version's shape.
func (r FacilitatorRequest) Body() ([]byte, error) {
	if r.Payment == nil || len(r.Payment.Raw) == 0 {
		return nil, fmt.Errorf("%w: facilitator request without a payment", ErrInvalidPayment)
	}
	reqJSON, err := r.Requirement.ForVersion(r.Payment.Version)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRequirement, err)
	}
	return marshalJSON(FacilitatorRequestBody{
		X402Version:         r.Payment.Version,
		PaymentPayload:      r.Payment.Raw,
		PaymentRequirements: reqJSON,
	})
}

// ParseFacilitatorRequest parses the body of POST /verify or /settle, as a
// facilitator receives it. The payment is parsed like a payment header
// (errors wrap ErrInvalidPayment); the requirement is read in the payment's
// version's shape and validated (errors wrap ErrInvalidRequirement). A
// top-level x402Version, when present, must equal the payment's.
func ParseFacilitatorRequest(body []byte) (FacilitatorRequest, error) {
	if len(body) > MaxRequestBodyBytes {
		return FacilitatorRequest{}, fmt.Errorf("%w: request body is %d bytes, over the %d byte limit", ErrInvalidPayment, len(body), MaxRequestBodyBytes)
	}
	var b FacilitatorRequestBody
	if err := json.Unmarshal(body, &b); err != nil {
		return FacilitatorRequest{}, fmt.Errorf("%w: bad request JSON: %v", ErrInvalidPayment, err)
	}
	if len(b.PaymentPayload) == 0 || string(b.PaymentPayload) == "null" {
		return FacilitatorRequest{}, fmt.Errorf("%w: paymentPayload is missing", ErrInvalidPayment)
	}
	p, err := ParsePaymentPayload(b.PaymentPayload)
	if err != nil {
		return FacilitatorRequest{}, err
	}
	if b.X402Version != 0 && b.X402Version != p.Version {
		return FacilitatorRequest{}, fmt.Errorf("%w: x402Version %d differs from the payment's %d", ErrInvalidPayment, b.X402Version, p.Version)
	}
	if len(b.PaymentRequirements) == 0 || string(b.PaymentRequirements) == "null" {
		return FacilitatorRequest{}, fmt.Errorf("%w: paymentRequirements is missing", ErrInvalidRequirement)
	}
	var req Requirement
	if p.Version == Version1 {
		var pr PaymentRequirementsV1
		if err := json.Unmarshal(b.PaymentRequirements, &pr); err != nil {
			return FacilitatorRequest{}, fmt.Errorf("%w: bad paymentRequirements: %v", ErrInvalidRequirement, err)
		}
		req = RequirementFromV1(pr)
	} else {
		var pr PaymentRequirements
		if err := json.Unmarshal(b.PaymentRequirements, &pr); err != nil {
			return FacilitatorRequest{}, fmt.Errorf("%w: bad paymentRequirements: %v", ErrInvalidRequirement, err)
		}
		req = RequirementFromV2(pr, p.Accepted.Resource)
	}
	if err := req.Validate(); err != nil {
		return FacilitatorRequest{}, err
	}
	return FacilitatorRequest{Payment: p, Requirement: req}, nil
}

// ParseVerifyResponse parses a /verify answer. The answer must be a JSON
// object with a boolean isValid; anything else is an error (a facilitator
// client reports it as ErrFacilitatorUnavailable).
func ParseVerifyResponse(body []byte) (*VerifyResponse, error) {
	var w struct {
		IsValid       *bool           `json:"isValid"`
		InvalidReason json.RawMessage `json:"invalidReason"`
		Payer         json.RawMessage `json:"payer"`
		Extra         json.RawMessage `json:"extra"`
	}
	if err := decodeAnswer(body, &w); err != nil {
		return nil, fmt.Errorf("verify answer: %w", err)
	}
	if w.IsValid == nil {
		return nil, errors.New("verify answer: isValid is missing")
	}
	return &VerifyResponse{
		IsValid:       *w.IsValid,
		InvalidReason: lenientString(w.InvalidReason),
		Payer:         lenientString(w.Payer),
		Extra:         extraObject(w.Extra),
	}, nil
}

// extraObject returns an answer's extra when it is a non-empty JSON
// object, nil otherwise.
func extraObject(raw json.RawMessage) map[string]any {
	if len(raw) == 0 {
		return nil
	}
	var extra map[string]any
	if json.Unmarshal(raw, &extra) != nil || len(extra) == 0 {
		return nil
	}
	return extra
}

// ParseSettleResponse parses a /settle answer. The answer must be a JSON
// object with a boolean success; anything else is an error (a facilitator
// client reports it as ErrFacilitatorUnavailable). An answer with success
// false and "status": "pending" (case-insensitive), and no other reason,
// is normalised to errorReason "settlement_pending", so that Pending
// recognises both conventions.
func ParseSettleResponse(body []byte) (*SettleResponse, error) {
	var w struct {
		Success     *bool           `json:"success"`
		ErrorReason json.RawMessage `json:"errorReason"`
		Payer       json.RawMessage `json:"payer"`
		Transaction json.RawMessage `json:"transaction"`
		Network     json.RawMessage `json:"network"`
		Status      json.RawMessage `json:"status"`
		Amount      json.RawMessage `json:"amount"`
		Extra       json.RawMessage `json:"extra"`
	}
	if err := decodeAnswer(body, &w); err != nil {
		return nil, fmt.Errorf("settle answer: %w", err)
	}
	if w.Success == nil {
		return nil, errors.New("settle answer: success is missing")
	}
	r := &SettleResponse{
		Success:     *w.Success,
		ErrorReason: lenientString(w.ErrorReason),
		Payer:       lenientString(w.Payer),
		Transaction: lenientString(w.Transaction),
		Network:     lenientString(w.Network),
	}
	// The settled amount (upto) is kept only when it is a number; extra
	// (a channel's state) only when it is an object.
	if a, ok := canonicalUint(lenientString(w.Amount)); ok {
		r.Amount = a
	}
	r.Extra = extraObject(w.Extra)
	if !r.Success && r.ErrorReason == "" && strings.EqualFold(lenientString(w.Status), "pending") {
		r.ErrorReason = ReasonSettlementPending
	}
	return r, nil
}

// ParseSupportedResponse parses a /supported answer: a JSON object with a
// kinds array.
func ParseSupportedResponse(body []byte) (*SupportedResponse, error) {
	var w struct {
		Kinds *[]SupportedKind `json:"kinds"`
		SupportedResponse
	}
	if err := decodeAnswer(body, &w); err != nil {
		return nil, fmt.Errorf("supported answer: %w", err)
	}
	if w.Kinds == nil {
		return nil, errors.New("supported answer: kinds is missing")
	}
	r := w.SupportedResponse
	r.Kinds = *w.Kinds
	return &r, nil
}

func decodeAnswer(body []byte, v any) error {
	if len(body) > MaxResponseBytes {
		return fmt.Errorf("body is %d bytes, over the %d byte limit", len(body), MaxResponseBytes)
	}
	trimmed := strings.TrimSpace(string(body))
	if trimmed == "" {
		return errors.New("empty body")
	}
	if trimmed[0] != '{' {
		return errors.New("body is not a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("bad JSON: %v", err)
	}
	return nil
}

// lenientString reads an optional informational string field; a value of
// another JSON type (some facilitators send null or an object) reads as "".
func lenientString(raw json.RawMessage) string {
	var s string
	if len(raw) == 0 || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return clipLong(s)
}

// clipLong bounds informational strings copied from a peer into records.
func clipLong(s string) string {
	const n = 512
	if len(s) <= n {
		return s
	}
	return s[:n]
}
