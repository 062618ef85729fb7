package localfacilitator

import (
	"github.com/402claw/dispatcher/x402"
)

// ParsePayment parses a payment JSON (a decoded PAYMENT-SIGNATURE, or a
// facilitator request's paymentPayload) of any scheme this facilitator
// handles. It is x402.ParsePaymentPayload, which fills Authorization,
// Signature and Payer for EIP-3009 payloads and leaves other scheme
// payloads (exact-permit2, upto) in Payload with the client's chosen
// requirement in Accepted; the facilitator decodes those itself. Errors
// wrap x402.ErrInvalidPayment.
func ParsePayment(raw []byte) (*x402.Payment, error) {
	return x402.ParsePaymentPayload(raw)
}

// DecodePayment decodes a PAYMENT-SIGNATURE or X-PAYMENT header value of
// any scheme this facilitator handles (x402.DecodePaymentHeader).
func DecodePayment(value string) (*x402.Payment, error) {
	return x402.DecodePaymentHeader(value)
}

// ParseRequest parses the body of POST /verify or /settle for any scheme
// this facilitator handles (x402.ParseFacilitatorRequest): the upto
// requirement's amount is taken as given, the maximum at verify and the
// charge at settle. Errors wrap x402.ErrInvalidPayment or
// x402.ErrInvalidRequirement.
func ParseRequest(body []byte) (x402.FacilitatorRequest, error) {
	return x402.ParseFacilitatorRequest(body)
}
