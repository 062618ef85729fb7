package x402_test

import (
	"encoding/base64"
	"errors"
	"reflect"
	"testing"

	"github.com/402claw/dispatcher/x402"
)

// FuzzDecodePaymentHeader: any header value decodes or fails with
// ErrInvalidPayment; a decoded payment is internally consistent and its
// derived values are computable.
func FuzzDecodePaymentHeader(f *testing.F) {
	for _, fx := range loadFixtures(f) {
		f.Add(fx.ClientSent.HeaderValue)
		f.Add(base64.RawURLEncoding.EncodeToString(fx.ClientSent.Decoded))
	}
	f.Add("")
	f.Add("e30")
	f.Add(base64.StdEncoding.EncodeToString([]byte(`{"x402Version":1,"scheme":"exact","network":"base","payload":null}`)))
	server := serverRequirement(f)
	f.Fuzz(func(t *testing.T, value string) {
		p, err := x402.DecodePaymentHeader(value)
		if err != nil {
			if !errors.Is(err, x402.ErrInvalidPayment) {
				t.Fatalf("error does not wrap ErrInvalidPayment: %v", err)
			}
			return
		}
		if p.Version != 1 && p.Version != 2 {
			t.Fatalf("version %d", p.Version)
		}
		if p.Payer != p.Authorization.From {
			t.Fatal("payer differs from authorization.from")
		}
		_ = x402.Match(server, p)
		_ = x402.IdempotencyKey(p, nil)
		_ = x402.Fingerprint("GET", "/", p)
		_ = p.ValidBefore()
		if _, err := (x402.FacilitatorRequest{Payment: p, Requirement: server}).Body(); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzParseVerifyResponse: a verify answer parses or errors, never panics.
func FuzzParseVerifyResponse(f *testing.F) {
	f.Add([]byte(`{"isValid":true,"payer":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8"}`))
	f.Add([]byte(`{"isValid":false,"invalidReason":"insufficient_funds"}`))
	f.Add([]byte(`{"isValid":null}`))
	f.Add([]byte(``))
	f.Add([]byte(`<html>`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := x402.ParseVerifyResponse(body)
		if err == nil && r == nil {
			t.Fatal("nil response without error")
		}
	})
}

// FuzzParseSettleResponse: a settle answer parses or errors; an outcome is
// always one of the three.
func FuzzParseSettleResponse(f *testing.F) {
	for _, fx := range loadFixtures(f) {
		f.Add([]byte(fx.ClientDecodedSettleResponse))
	}
	f.Add([]byte(`{"success":false,"errorReason":"settlement_pending","transaction":"0x00"}`))
	f.Add([]byte(`{"success":false,"status":"pending"}`))
	f.Add([]byte(`{"success":"yes"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := x402.ParseSettleResponse(body)
		if err != nil {
			return
		}
		switch r.Outcome() {
		case x402.SettleSucceeded, x402.SettleFailed, x402.SettlePending:
		default:
			t.Fatal("unknown outcome")
		}
		if r.Success && r.Pending() {
			t.Fatal("success and pending")
		}
	})
}

// FuzzDecodeSettleResponse: the response header decoder wraps
// ErrInvalidSettleResponse on failure and round-trips on success.
func FuzzDecodeSettleResponse(f *testing.F) {
	for _, fx := range loadFixtures(f) {
		f.Add(base64.StdEncoding.EncodeToString(fx.ClientDecodedSettleResponse))
	}
	f.Add("")
	f.Fuzz(func(t *testing.T, value string) {
		r, err := x402.DecodeSettleResponse(value)
		if err != nil {
			if !errors.Is(err, x402.ErrInvalidSettleResponse) {
				t.Fatal(err)
			}
			return
		}
		enc, err := x402.EncodeSettleResponse(r)
		if err != nil {
			t.Fatal(err)
		}
		again, err := x402.DecodeSettleResponse(enc)
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("round trip: %v %+v %+v", err, again, r)
		}
	})
}

// FuzzParseFacilitatorRequest: what a facilitator receives parses or errors
// with a sentinel.
func FuzzParseFacilitatorRequest(f *testing.F) {
	for _, name := range []string{"client-v2.json", "client-v1.json"} {
		body, err := fixtureRequest(f, name).Body()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
	}
	f.Add([]byte(`{"paymentPayload":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := x402.ParseFacilitatorRequest(body)
		if err != nil {
			if !errors.Is(err, x402.ErrInvalidPayment) && !errors.Is(err, x402.ErrInvalidRequirement) {
				t.Fatal(err)
			}
			return
		}
		if err := req.Requirement.Validate(); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzDecodePaymentRequired: the challenge decoder never panics.
func FuzzDecodePaymentRequired(f *testing.F) {
	ch, err := x402.NewChallenge(serverRequirement(f), x402.ChallengeOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ch.Header)
	f.Fuzz(func(t *testing.T, value string) {
		_, err := x402.DecodePaymentRequired(value)
		if err != nil && !errors.Is(err, x402.ErrInvalidRequirement) {
			t.Fatal(err)
		}
	})
}
