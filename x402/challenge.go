package x402

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// ChallengeOptions adjust a challenge.
type ChallengeOptions struct {
	// Error is the error text of both generations' challenge, for example
	// a verification failure reason after a rejected payment. Empty means
	// DefaultErrorV2 in the header and DefaultErrorV1 in the body.
	Error string
	// Extensions are advertised in the version 2 challenge (for example
	// PaymentIdentifierExtension). Version 1 has no extensions.
	Extensions Extensions
}

// Challenge is a 402 answer that both protocol generations understand.
type Challenge struct {
	// PaymentRequired is the version 2 challenge.
	PaymentRequired PaymentRequired
	// PaymentRequiredV1 is the version 1 challenge.
	PaymentRequiredV1 PaymentRequiredV1
	// Header is the PAYMENT-REQUIRED header value: standard base64 of the
	// PaymentRequired JSON.
	Header string
	// Body is the JSON body: the PaymentRequiredV1 JSON.
	Body []byte
}

// NewChallenge builds the dual challenge for one requirement: the version 2
// PAYMENT-REQUIRED header value and the version 1 JSON body
// {"x402Version":1,"error":...,"accepts":[...]}, describing the same
// payment. The requirement must be valid (wraps ErrInvalidRequirement).
func NewChallenge(req Requirement, opts ChallengeOptions) (*Challenge, error) {
	return NewChallengeAll([]Requirement{req}, opts)
}

// NewChallengeAll builds the dual challenge for several ways to pay, in
// order: every requirement in the version 2 header's accepts, and in the
// version 1 body only those version 1 can express (exact over EIP-3009;
// the list may then be empty). The resource is the first requirement's.
// Every requirement must be valid (wraps ErrInvalidRequirement).
func NewChallengeAll(reqs []Requirement, opts ChallengeOptions) (*Challenge, error) {
	if len(reqs) == 0 {
		return nil, fmt.Errorf("%w: no requirement to offer", ErrInvalidRequirement)
	}
	errV2, errV1 := DefaultErrorV2, DefaultErrorV1
	if opts.Error != "" {
		errV2, errV1 = opts.Error, opts.Error
	}
	v2 := make([]PaymentRequirements, 0, len(reqs))
	v1 := make([]PaymentRequirementsV1, 0, len(reqs))
	for _, req := range reqs {
		if err := req.Validate(); err != nil {
			return nil, err
		}
		v2 = append(v2, req.V2())
		if req.V1Expressible() {
			v1 = append(v1, req.V1())
		}
	}
	c := &Challenge{
		PaymentRequired: PaymentRequired{
			X402Version: Version2,
			Error:       errV2,
			Resource:    reqs[0].Resource,
			Accepts:     v2,
			Extensions:  opts.Extensions,
		},
		PaymentRequiredV1: PaymentRequiredV1{
			X402Version: Version1,
			Error:       errV1,
			Accepts:     v1,
		},
	}
	hdr, err := marshalJSON(c.PaymentRequired)
	if err != nil {
		return nil, fmt.Errorf("x402: encode challenge: %w", err)
	}
	c.Header = base64.StdEncoding.EncodeToString(hdr)
	c.Body, err = marshalJSON(c.PaymentRequiredV1)
	if err != nil {
		return nil, fmt.Errorf("x402: encode challenge: %w", err)
	}
	return c, nil
}

// V1Expressible reports whether version 1 can express the requirement:
// exact over EIP-3009, with no other transfer method.
func (r Requirement) V1Expressible() bool {
	m := r.ExtraString("assetTransferMethod")
	return r.Scheme == SchemeExact && (m == "" || m == "eip3009")
}

// Write sends the challenge: the PAYMENT-REQUIRED header, a JSON content
// type, status 402 and the version 1 body. Headers already set on w (request
// id, limits) are kept.
func (c *Challenge) Write(w http.ResponseWriter) {
	h := w.Header()
	h.Set(HeaderPaymentRequired, c.Header)
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusPaymentRequired)
	_, _ = w.Write(c.Body)
}

// DecodePaymentRequired decodes a PAYMENT-REQUIRED header value (standard
// or URL-safe base64, padded or not). It is what a client, a test or a load
// generator uses to read a challenge. Errors wrap ErrInvalidRequirement.
func DecodePaymentRequired(value string) (*PaymentRequired, error) {
	raw, err := decodeBase64Header(value)
	if err != nil {
		return nil, fmt.Errorf("%w: PAYMENT-REQUIRED: %v", ErrInvalidRequirement, err)
	}
	var pr PaymentRequired
	if err := json.Unmarshal(raw, &pr); err != nil {
		return nil, fmt.Errorf("%w: PAYMENT-REQUIRED: %v", ErrInvalidRequirement, err)
	}
	if pr.X402Version != Version2 {
		return nil, fmt.Errorf("%w: PAYMENT-REQUIRED: x402Version %d", ErrInvalidRequirement, pr.X402Version)
	}
	return &pr, nil
}

// PaymentIdentifierExtension returns the value that advertises the
// payment-identifier extension in a version 2 challenge (put it under
// ExtensionPaymentIdentifier in ChallengeOptions.Extensions). Clients that
// support it echo it with info.id set to their idempotency key.
func PaymentIdentifierExtension(required bool) json.RawMessage {
	info := "{}"
	if required {
		info = `{"required":true}`
	}
	return json.RawMessage(`{"info":` + info + `,"schema":{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"required":{"type":"boolean"},"id":{"type":"string","minLength":16,"maxLength":128}}}}`)
}

// decodeBase64Header decodes a header value in standard or URL-safe
// base64, padded or not, after trimming surrounding spaces. It refuses
// values over MaxHeaderBytes before doing any work.
func decodeBase64Header(value string) ([]byte, error) {
	if len(value) > MaxHeaderBytes {
		return nil, fmt.Errorf("header value is %d bytes, over the %d byte limit", len(value), MaxHeaderBytes)
	}
	v := strings.TrimSpace(value)
	if v == "" {
		return nil, fmt.Errorf("header value is empty")
	}
	enc := base64.StdEncoding
	if strings.ContainsAny(v, "-_") {
		enc = base64.URLEncoding
	}
	if !strings.HasSuffix(v, "=") {
		enc = enc.WithPadding(base64.NoPadding)
	}
	raw, err := enc.Strict().DecodeString(v)
	if err != nil {
		return nil, fmt.Errorf("bad base64: %v", err)
	}
	return raw, nil
}
