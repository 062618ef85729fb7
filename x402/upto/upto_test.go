package upto_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/eip712"
	"github.com/402claw/dispatcher/x402/permit2"
	"github.com/402claw/dispatcher/x402/upto"
	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"
)

const fixtureFacilitator = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"

type fixture struct {
	SignedAtUnix int64  `json:"signedAtUnix"`
	Payer        string `json:"payer"`
	Challenge    struct {
		Header x402.PaymentRequired `json:"headerPAYMENT_REQUIRED"`
	} `json:"challenge"`
	ClientSent struct {
		Decoded      x402.PaymentPayload `json:"decoded"`
		EIP712Digest string              `json:"eip712Digest"`
	} `json:"clientSent"`
}

func load(t testing.TB) fixture {
	t.Helper()
	b, err := os.ReadFile("testdata/client-upto.json")
	require.NoError(t, err)
	var f fixture
	require.NoError(t, json.Unmarshal(b, &f))
	var buf bytes.Buffer
	require.NoError(t, json.Compact(&buf, f.ClientSent.Decoded.Payload))
	f.ClientSent.Decoded.Payload = buf.Bytes()
	return f
}

func (f fixture) now() time.Time { return time.Unix(f.SignedAtUnix, 0) }

func (f fixture) requirement() x402.Requirement {
	return x402.RequirementFromV2(f.Challenge.Header.Accepts[0], f.Challenge.Header.Resource)
}

func (f fixture) payment(payload json.RawMessage) *x402.Payment {
	if payload == nil {
		payload = f.ClientSent.Decoded.Payload
	}
	return &x402.Payment{
		Version:  x402.Version2,
		Accepted: x402.RequirementFromV2(f.ClientSent.Decoded.Accepted, x402.ResourceInfo{}),
		Payload:  payload,
	}
}

func newScheme(t testing.TB) *upto.Scheme {
	t.Helper()
	s, err := upto.New(upto.Config{FacilitatorAddress: strings.ToLower(fixtureFacilitator)})
	require.NoError(t, err)
	return s
}

func TestRealClientDigestAndSigner(t *testing.T) {
	t.Parallel()
	f := load(t)
	pl, err := upto.DecodePayload(f.ClientSent.Decoded.Payload)
	require.NoError(t, err)
	d, err := pl.Permit2Authorization.Digest(84532)
	require.NoError(t, err)
	require.Equal(t, f.ClientSent.EIP712Digest, "0x"+hex.EncodeToString(d[:]))
	signer, err := eip712.RecoverSigner(d, pl.Signature)
	require.NoError(t, err)
	require.Equal(t, f.Payer, signer)

	// The facilitator is signed: another one is another digest.
	other := pl.Permit2Authorization
	other.Witness.Facilitator = f.Payer
	d2, err := other.Digest(84532)
	require.NoError(t, err)
	require.NotEqual(t, d, d2)
}

func TestSchemeAcceptsTheRealClient(t *testing.T) {
	t.Parallel()
	f := load(t)
	s := newScheme(t)
	require.Equal(t, "upto", s.Name())
	require.Equal(t, x402.PricingMaximum, s.Pricing())
	require.Equal(t, fixtureFacilitator, s.Facilitator(), "checksummed")

	req, err := s.Requirement(x402.Offer{
		Price:    decimal.RequireFromString("0.01"),
		MaxPrice: decimal.RequireFromString("0.05"),
		PayTo:    "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
		Resource: f.Challenge.Header.Resource,
	})
	require.NoError(t, err)
	require.Equal(t, f.Challenge.Header.Accepts[0], req.V2(), "the entry the real client paid")
	require.True(t, s.Claims(req))
	require.False(t, s.Claims(x402.Requirement{Scheme: "exact"}))

	g, err := s.Check(f.payment(nil), req, f.now())
	require.NoError(t, err)
	require.Equal(t, f.Payer, g.Payer)
	require.Equal(t, "50000", g.Amount, "the grant is the maximum")
	require.True(t, strings.HasPrefix(g.ID, "eip155:84532:permit2:0x70997970c51812dc3a010c7d01b50e0d17dc79c8:"))
	require.Len(t, g.Signed, 11)
	require.Equal(t, strings.ToLower(fixtureFacilitator), g.Signed[9])

	// MaxPrice zero means Price.
	req2, err := s.Requirement(x402.Offer{Price: decimal.RequireFromString("0.01"), PayTo: req.PayTo})
	require.NoError(t, err)
	require.Equal(t, "10000", req2.Amount)
}

func TestCheckRefusesMismatches(t *testing.T) {
	t.Parallel()
	f := load(t)
	s := newScheme(t)
	req := f.requirement()
	for _, tc := range []struct {
		name, field, reason string
		edit                func(a map[string]any)
	}{
		{"exact spender", permit2.FieldSpender, permit2.ReasonInvalidSpender, func(a map[string]any) { a["spender"] = permit2.ExactProxy }},
		{"amount below max", permit2.FieldAmount, permit2.ReasonAmountMismatch, func(a map[string]any) { a["permitted"].(map[string]any)["amount"] = "40000" }},
		{"witness.to", permit2.FieldTo, permit2.ReasonRecipientMismatch, func(a map[string]any) { a["witness"].(map[string]any)["to"] = fixtureFacilitator }},
		{"witness.facilitator", permit2.FieldFacilitator, upto.ReasonFacilitatorMismatch, func(a map[string]any) {
			a["witness"].(map[string]any)["facilitator"] = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
		}},
		{"deadline", permit2.FieldDeadline, permit2.ReasonDeadlineExpired, func(a map[string]any) { a["deadline"] = "1796229650" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := s.Check(f.payment(edit(t, f.ClientSent.Decoded.Payload, tc.edit)), req, f.now())
			require.ErrorIs(t, err, x402.ErrRequirementMismatch)
			var me *x402.MismatchError
			require.True(t, errors.As(err, &me))
			require.Equal(t, tc.field, me.Field)
			require.Equal(t, tc.reason, upto.Reason(err))
		})
	}
	// A scheme configured for another facilitator refuses the payment.
	other, err := upto.New(upto.Config{FacilitatorAddress: f.Payer})
	require.NoError(t, err)
	r2 := req
	r2.Extra = map[string]any{"name": "USDC", "version": "2"}
	_, err = other.Check(f.payment(nil), r2, f.now())
	require.Equal(t, upto.ReasonFacilitatorMismatch, upto.Reason(err))
	// A requirement naming another facilitator than the scheme's is the
	// server's own error.
	_, err = other.Check(f.payment(nil), req, f.now())
	require.ErrorIs(t, err, x402.ErrInvalidRequirement)
}

func edit(t testing.TB, payload json.RawMessage, fn func(a map[string]any)) json.RawMessage {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(payload, &m))
	fn(m["permit2Authorization"].(map[string]any))
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return b
}

func TestDecodePayloadRefusesMalformed(t *testing.T) {
	t.Parallel()
	f := load(t)
	good := string(f.ClientSent.Decoded.Payload)
	for name, raw := range map[string]string{
		"null":                `null`,
		"exact witness":       strings.Replace(good, `"facilitator":"0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",`, ``, 1),
		"bad facilitator":     strings.Replace(good, `"facilitator":"0x3C44`, `"facilitator":"0x3C`, 1),
		"extra witness field": strings.Replace(good, `"validAfter":"0"`, `"validAfter":"0","extra":"x"`, 1),
		"float amount":        strings.Replace(good, `"amount":"50000"`, `"amount":"5e4"`, 1),
	} {
		require.NotEqual(t, good, raw, name)
		_, err := upto.DecodePayload(json.RawMessage(raw))
		require.ErrorIs(t, err, x402.ErrInvalidPayment, name)
	}
}

func TestNewAndSupported(t *testing.T) {
	t.Parallel()
	_, err := upto.New(upto.Config{})
	require.ErrorIs(t, err, x402.ErrInvalidRequirement)
	_, err = upto.New(upto.Config{FacilitatorAddress: "0x12"})
	require.ErrorIs(t, err, x402.ErrInvalidRequirement)

	sup := &x402.SupportedResponse{Kinds: []x402.SupportedKind{
		{X402Version: 2, Scheme: "exact", Network: "eip155:84532"},
		{X402Version: 2, Scheme: "upto", Network: "eip155:8453", Extra: map[string]any{"facilitatorAddress": "0x1111111111111111111111111111111111111111"}},
		{X402Version: 2, Scheme: "upto", Network: "eip155:84532", Extra: map[string]any{"facilitatorAddress": fixtureFacilitator}},
	}}
	a, ok := upto.FacilitatorAddress(sup, "base-sepolia")
	require.True(t, ok)
	require.Equal(t, fixtureFacilitator, a)
	_, ok = upto.FacilitatorAddress(sup, "eip155:1")
	require.False(t, ok)
	_, ok = upto.FacilitatorAddress(nil, "eip155:84532")
	require.False(t, ok)
}

func FuzzDecodePayload(f *testing.F) {
	fx := load(f)
	f.Add([]byte(fx.ClientSent.Decoded.Payload))
	f.Add([]byte(`{"signature":"0x","permit2Authorization":{"witness":{"facilitator":1}}}`))
	s := newScheme(f)
	req := fx.requirement()
	f.Fuzz(func(t *testing.T, raw []byte) {
		pl, err := upto.DecodePayload(raw)
		if err != nil {
			if !errors.Is(err, x402.ErrInvalidPayment) {
				t.Fatalf("error does not wrap ErrInvalidPayment: %v", err)
			}
			return
		}
		if _, err := pl.Permit2Authorization.Digest(84532); err != nil {
			t.Fatalf("decoded payload does not hash: %v", err)
		}
		if _, err := s.Check(fx.payment(raw), req, fx.now()); err != nil && !errors.Is(err, x402.ErrRequirementMismatch) {
			t.Fatalf("check of a decoded payload: %v", err)
		}
	})
}

// BenchmarkCheck measures the gateway-side check of a real client's upto
// payment.
func BenchmarkCheck(b *testing.B) {
	f := load(b)
	s := newScheme(b)
	req, p, now := f.requirement(), f.payment(nil), f.now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Check(p, req, now); err != nil {
			b.Fatal(err)
		}
	}
}
