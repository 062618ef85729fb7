package permit2_test

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
	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"
)

type fixture struct {
	SignedAtUnix int64  `json:"signedAtUnix"`
	Payer        string `json:"payer"`
	Constants    struct {
		Permit2           string `json:"permit2"`
		ExactPermit2Proxy string `json:"exactPermit2Proxy"`
		UptoPermit2Proxy  string `json:"uptoPermit2Proxy"`
	} `json:"constants"`
	Challenge struct {
		Header x402.PaymentRequired `json:"headerPAYMENT_REQUIRED"`
	} `json:"challenge"`
	ClientSent struct {
		Decoded      x402.PaymentPayload `json:"decoded"`
		EIP712Digest string              `json:"eip712Digest"`
	} `json:"clientSent"`
}

func load(t testing.TB) fixture {
	t.Helper()
	b, err := os.ReadFile("testdata/client-exact-permit2.json")
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

// payment builds the decoded payment as the x402 envelope parser does for
// a non-EIP-3009 payload: Accepted and the raw scheme payload.
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

func TestConstantsMatchTheClient(t *testing.T) {
	t.Parallel()
	f := load(t)
	require.Equal(t, f.Constants.Permit2, permit2.Address)
	require.Equal(t, f.Constants.ExactPermit2Proxy, permit2.ExactProxy)
	require.Equal(t, f.Constants.UptoPermit2Proxy, permit2.UptoProxy)
}

func TestRealClientDigestAndSigner(t *testing.T) {
	t.Parallel()
	f := load(t)
	pl, err := permit2.DecodePayload(f.ClientSent.Decoded.Payload)
	require.NoError(t, err)
	d, err := pl.Permit2Authorization.Digest(84532)
	require.NoError(t, err)
	require.Equal(t, f.ClientSent.EIP712Digest, "0x"+hex.EncodeToString(d[:]))
	signer, err := eip712.RecoverSigner(d, pl.Signature)
	require.NoError(t, err)
	require.Equal(t, f.Payer, signer)

	// Another chain is another digest: the signature does not carry over.
	d2, err := pl.Permit2Authorization.Digest(8453)
	require.NoError(t, err)
	require.NotEqual(t, d, d2)
}

func TestCheckAcceptsTheRealClient(t *testing.T) {
	t.Parallel()
	f := load(t)
	s := permit2.New()
	req := f.requirement()
	require.True(t, s.Claims(req))
	g, err := s.Check(f.payment(nil), req, f.now())
	require.NoError(t, err)
	a := f.ClientSent.Decoded.Payload
	require.Equal(t, f.Payer, g.Payer)
	require.Equal(t, "10000", g.Amount)
	require.Equal(t, "eip155:84532:permit2:0x70997970c51812dc3a010c7d01b50e0d17dc79c8:94476597570451009958181624480346966835120664501497069489509763678424091531460", g.ID)
	require.Equal(t, time.Unix(0, 0).UTC(), g.ValidAfter)
	require.Equal(t, time.Unix(1796229708, 0).UTC(), g.ValidBefore)
	require.Len(t, g.Signed, 10)
	require.Contains(t, string(a), strings.TrimPrefix(g.Signed[9], "0x"))

	// Re-encoding (other key order, upper-case hex, hex nonce) grants
	// the same authorization identity and signed fields.
	var m map[string]any
	require.NoError(t, json.Unmarshal(a, &m))
	auth := m["permit2Authorization"].(map[string]any)
	auth["from"] = strings.ToUpper(auth["from"].(string)[2:])
	auth["from"] = "0x" + auth["from"].(string)
	auth["nonce"] = "0xd0de4d95a0b6f2d0b6a1b5c6b0ed7e3eb5c5d08c0d2c3f1d3b5e9b4c0c1c4c4"
	b, err := json.Marshal(m)
	require.NoError(t, err)
	g2, err := s.Check(f.payment(b), req, f.now())
	require.NoError(t, err)
	require.Equal(t, g.Signed[1], g2.Signed[1])
	require.NotEqual(t, g.ID, g2.ID)

	// The same payment with v written as 0/1 and upper-case hex
	// fingerprints the same.
	var m2 map[string]any
	require.NoError(t, json.Unmarshal(a, &m2))
	sig := m2["signature"].(string)
	v := sig[130:]
	require.Equal(t, "1b", v)
	m2["signature"] = "0x" + strings.ToUpper(sig[2:130]) + "00"
	b2, err := json.Marshal(m2)
	require.NoError(t, err)
	g3, err := s.Check(f.payment(b2), req, f.now())
	require.NoError(t, err)
	require.Equal(t, g, g3)
}

func TestCheckRefusesMismatches(t *testing.T) {
	t.Parallel()
	f := load(t)
	s := permit2.New()
	req := f.requirement()
	for _, tc := range []struct {
		name   string
		edit   func(a map[string]any)
		now    time.Time
		field  string
		reason string
	}{
		{"spender", func(a map[string]any) { a["spender"] = permit2.UptoProxy }, f.now(), permit2.FieldSpender, permit2.ReasonInvalidSpender},
		{"token", func(a map[string]any) {
			a["permitted"].(map[string]any)["token"] = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
		}, f.now(), permit2.FieldToken, permit2.ReasonTokenMismatch},
		{"amount", func(a map[string]any) { a["permitted"].(map[string]any)["amount"] = "9999" }, f.now(), permit2.FieldAmount, permit2.ReasonAmountMismatch},
		{"witness.to", func(a map[string]any) {
			a["witness"].(map[string]any)["to"] = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
		}, f.now(), permit2.FieldTo, permit2.ReasonRecipientMismatch},
		{"deadline", func(map[string]any) {}, f.now().Add(55 * time.Second), permit2.FieldDeadline, permit2.ReasonDeadlineExpired},
		{"validAfter", func(a map[string]any) { a["witness"].(map[string]any)["validAfter"] = "1796229649" }, f.now(), permit2.FieldValidAfter, permit2.ReasonNotYetValid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := s.Check(f.payment(edit(t, f.ClientSent.Decoded.Payload, tc.edit)), req, tc.now)
			require.ErrorIs(t, err, x402.ErrRequirementMismatch)
			var me *x402.MismatchError
			require.True(t, errors.As(err, &me))
			require.Equal(t, tc.field, me.Field)
			require.Equal(t, tc.reason, permit2.Reason(err))
		})
	}
	// Just inside the deadline buffer is still fine.
	_, err := s.Check(f.payment(nil), req, f.now().Add(54*time.Second))
	require.NoError(t, err)
	// Another network.
	other := req
	other.Network = x402.NetworkBase
	_, err = s.Check(f.payment(nil), other, f.now())
	require.ErrorIs(t, err, x402.ErrRequirementMismatch)
	_, err = s.Check(nil, req, f.now())
	require.ErrorIs(t, err, x402.ErrInvalidPayment)
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
		"empty":             ``,
		"null":              `null`,
		"array":             `[]`,
		"trailing":          good + `{}`,
		"unknown field":     strings.Replace(good, `"spender"`, `"facilitator":"0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC","spender"`, 1),
		"eip3009 shape":     `{"signature":"0x00","authorization":{}}`,
		"short signature":   strings.Replace(good, `"signature":"0x5608`, `"signature":"0x56`, 1),
		"bad from":          strings.Replace(good, `"from":"0x7099`, `"from":"0xZZ99`, 1),
		"negative amount":   strings.Replace(good, `"amount":"10000"`, `"amount":"-10000"`, 1),
		"number amount":     strings.Replace(good, `"amount":"10000"`, `"amount":10000`, 1),
		"huge deadline":     strings.Replace(good, `"deadline":"1796229708"`, `"deadline":"1157920892373161954235709850086879078532699846656405640394575840079131296399360"`, 1),
		"missing witness":   strings.Replace(good, `"witness":{`, `"witnesz":{`, 1),
		"hex nonce too big": strings.Replace(good, `"nonce":"94476597570451009958181624480346966835120664501497069489509763678424091531460"`, `"nonce":"0x1`+strings.Repeat("0", 64)+`"`, 1),
		"missing nonce":     strings.Replace(good, `"nonce":"94476597570451009958181624480346966835120664501497069489509763678424091531460",`, ``, 1),
	} {
		_, err := permit2.DecodePayload(json.RawMessage(raw))
		require.ErrorIs(t, err, x402.ErrInvalidPayment, name)
	}
	pl, err := permit2.DecodePayload(json.RawMessage(strings.Replace(good, `"amount":"10000"`, `"amount":"0010000"`, 1)))
	require.NoError(t, err)
	require.Equal(t, "10000", pl.Permit2Authorization.Permitted.Amount, "integers are canonical")
}

func TestRequirementAndClaims(t *testing.T) {
	t.Parallel()
	f := load(t)
	s := permit2.New()
	require.Equal(t, "exact-permit2", s.Name())
	require.Equal(t, x402.PricingFixed, s.Pricing())
	req, err := s.Requirement(x402.Offer{
		Price:    decimal.RequireFromString("0.01"),
		PayTo:    "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
		Resource: f.Challenge.Header.Resource,
	})
	require.NoError(t, err)
	// The entry is the one the real client paid.
	require.Equal(t, f.Challenge.Header.Accepts[0], req.V2())
	require.True(t, s.Claims(req))
	exact := req
	exact.Extra = map[string]any{"name": "USDC", "version": "2"}
	require.False(t, s.Claims(exact), "EIP-3009 exact is not permit2")
	upto := req
	upto.Scheme = "upto"
	require.False(t, s.Claims(upto))

	_, err = s.Requirement(x402.Offer{Price: decimal.RequireFromString("0.0000001"), PayTo: req.PayTo})
	require.ErrorIs(t, err, x402.ErrInvalidPrice)
	_, err = s.Requirement(x402.Offer{Network: "solana", Price: decimal.RequireFromString("1"), PayTo: req.PayTo})
	require.ErrorIs(t, err, x402.ErrUnknownNetwork)
}

func TestHasPermit2Authorization(t *testing.T) {
	t.Parallel()
	f := load(t)
	require.True(t, permit2.HasPermit2Authorization(f.ClientSent.Decoded.Payload))
	require.False(t, permit2.HasPermit2Authorization(json.RawMessage(`{"authorization":{},"signature":"0x"}`)))
	require.False(t, permit2.HasPermit2Authorization(json.RawMessage(`{"permit2Authorization":null}`)))
	require.False(t, permit2.HasPermit2Authorization(json.RawMessage(`nope`)))
}

func TestUnixTimeClamps(t *testing.T) {
	t.Parallel()
	require.Equal(t, 9999, permit2.UnixTime("99999999999999999999999").Year())
	require.Equal(t, 9999, permit2.UnixTime("253402300800").Year())
	require.Equal(t, int64(1796229708), permit2.UnixTime("1796229708").Unix())
}

func FuzzDecodePayload(f *testing.F) {
	fx := load(f)
	f.Add([]byte(fx.ClientSent.Decoded.Payload))
	f.Add([]byte(`{"signature":"0x","permit2Authorization":{"nonce":"0x"}}`))
	f.Add([]byte(`{}`))
	req := fx.requirement()
	f.Fuzz(func(t *testing.T, raw []byte) {
		pl, err := permit2.DecodePayload(raw)
		if err != nil {
			if !errors.Is(err, x402.ErrInvalidPayment) {
				t.Fatalf("error does not wrap ErrInvalidPayment: %v", err)
			}
			return
		}
		// A decoded payload is canonical and hashes without error.
		if _, err := pl.Permit2Authorization.Digest(84532); err != nil {
			t.Fatalf("decoded payload does not hash: %v", err)
		}
		_, err = permit2.New().Check(fx.payment(raw), req, fx.now())
		if err != nil && !errors.Is(err, x402.ErrRequirementMismatch) {
			t.Fatalf("check of a decoded payload: %v", err)
		}
	})
}

// BenchmarkCheck measures the gateway-side check of a real client's
// payment (decode, normalize, field checks, grant).
func BenchmarkCheck(b *testing.B) {
	f := load(b)
	s := permit2.New()
	req, p, now := f.requirement(), f.payment(nil), f.now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Check(p, req, now); err != nil {
			b.Fatal(err)
		}
	}
}
