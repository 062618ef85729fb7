package x402_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/stretchr/testify/require"
)

func TestDecodeFixtureHeaders(t *testing.T) {
	t.Parallel()
	for _, f := range loadFixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			h.Set(f.ClientSent.Header, f.ClientSent.HeaderValue)
			p, err := x402.PaymentFromHeader(h)
			require.NoError(t, err)
			require.Equal(t, f.ClientSent.Header, p.Header)

			var decoded struct {
				X402Version int                  `json:"x402Version"`
				Payload     x402.ExactEVMPayload `json:"payload"`
			}
			require.NoError(t, json.Unmarshal(f.ClientSent.Decoded, &decoded))
			require.Equal(t, decoded.X402Version, p.Version)
			require.Equal(t, decoded.Payload.Authorization, p.Authorization)
			require.Equal(t, decoded.Payload.Signature, p.Signature)
			require.Equal(t, f.Payer, p.Payer)
			require.JSONEq(t, string(f.ClientSent.Decoded), string(p.Raw))

			// The chosen requirement is normalised to the server's terms.
			require.Equal(t, "exact", p.Accepted.Scheme)
			require.Equal(t, "eip155:84532", p.Accepted.Network)
			require.Equal(t, "10000", p.Accepted.Amount)
			require.Equal(t, "0x036CbD53842c5426634e7929541eC2318f3dCF7e", p.Accepted.Asset)
			require.Equal(t, "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", p.Accepted.PayTo)
			require.NoError(t, x402.Match(serverRequirement(t), p))

			want := x402.HeaderPaymentResponse
			if p.Version == 1 {
				want = x402.HeaderXPaymentResponse
			}
			require.Equal(t, want, p.ResponseHeader())
			require.Equal(t, f.SignedAtUnix+60, p.ValidBefore().Unix())
			require.True(t, p.ValidAfter().Before(time.Unix(f.SignedAtUnix, 0)))
		})
	}
}

func TestDecodeAcceptsBase64Variants(t *testing.T) {
	t.Parallel()
	f := fixtureNamed(t, "client-v2.json")
	raw, err := base64.StdEncoding.DecodeString(f.ClientSent.HeaderValue)
	require.NoError(t, err)
	want, err := x402.DecodePaymentHeader(f.ClientSent.HeaderValue)
	require.NoError(t, err)
	for name, enc := range map[string]*base64.Encoding{
		"std":           base64.StdEncoding,
		"std unpadded":  base64.RawStdEncoding,
		"url":           base64.URLEncoding,
		"url unpadded":  base64.RawURLEncoding,
		"std + spaces ": base64.StdEncoding,
	} {
		v := enc.EncodeToString(raw)
		if strings.HasSuffix(name, " ") {
			v = "  " + v + " "
		}
		got, err := x402.DecodePaymentHeader(v)
		require.NoError(t, err, name)
		require.Equal(t, want, got, name)
	}
}

func TestPaymentFromHeader(t *testing.T) {
	t.Parallel()
	v2 := fixtureNamed(t, "client-v2.json").ClientSent.HeaderValue
	v1 := fixtureNamed(t, "client-v1.json").ClientSent.HeaderValue

	_, err := x402.PaymentFromHeader(http.Header{})
	require.ErrorIs(t, err, x402.ErrNoPayment)
	require.False(t, errors.Is(err, x402.ErrInvalidPayment))

	// PAYMENT-SIGNATURE wins when both are present.
	h := http.Header{}
	h.Set("X-Payment", v1)
	h.Set("Payment-Signature", v2)
	p, err := x402.PaymentFromHeader(h)
	require.NoError(t, err)
	require.Equal(t, 2, p.Version)
	require.Equal(t, x402.HeaderPaymentSignature, p.Header)

	h = http.Header{}
	h.Add(x402.HeaderXPayment, v1)
	h.Add(x402.HeaderXPayment, v1)
	_, err = x402.PaymentFromHeader(h)
	require.ErrorIs(t, err, x402.ErrInvalidPayment)

	h = http.Header{}
	h.Set(x402.HeaderXPayment, "%%%")
	_, err = x402.PaymentFromHeader(h)
	require.ErrorIs(t, err, x402.ErrInvalidPayment)
	require.Contains(t, err.Error(), "X-PAYMENT")
}

func TestDecodeRefusesMalformed(t *testing.T) {
	t.Parallel()
	v2 := fixtureNamed(t, "client-v2.json").ClientSent.HeaderValue
	v1 := fixtureNamed(t, "client-v1.json").ClientSent.HeaderValue
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	edit2 := func(fn func(m map[string]any)) string { return editPayment(t, v2, fn) }
	edit1 := func(fn func(m map[string]any)) string { return editPayment(t, v1, fn) }

	cases := map[string]struct {
		value string
		msg   string
	}{
		"empty":                {"", "empty"},
		"bad base64":           {"!!!notbase64", "base64"},
		"mixed alphabets":      {"ab+_", "base64"},
		"not JSON":             {b64("hello"), "JSON"},
		"JSON array":           {b64("[1,2]"), "JSON"},
		"JSON null":            {b64("null"), "x402Version 0"},
		"version as string":    {b64(`{"x402Version":"2"}`), "JSON"},
		"version 3":            {b64(`{"x402Version":3}`), "x402Version 3"},
		"version huge":         {b64(`{"x402Version":1e400}`), "JSON"},
		"no version":           {b64(`{"scheme":"exact"}`), "x402Version 0"},
		"oversize":             {strings.Repeat("A", x402.MaxHeaderBytes+4), "limit"},
		"malformed scheme":     {edit2(func(m map[string]any) { m["accepted"].(map[string]any)["scheme"] = "Not A Scheme!" }), "scheme"},
		"v1 unknown scheme":    {edit1(func(m map[string]any) { m["scheme"] = "deferred" }), "scheme"},
		"missing scheme":       {edit1(func(m map[string]any) { delete(m, "scheme") }), "scheme is missing"},
		"solana network":       {edit1(func(m map[string]any) { m["network"] = "solana-devnet" }), "network"},
		"missing network":      {edit2(func(m map[string]any) { delete(m["accepted"].(map[string]any), "network") }), "network is missing"},
		"missing accepted":     {edit2(func(m map[string]any) { delete(m, "accepted") }), "scheme is missing"},
		"amount wrong type":    {edit2(func(m map[string]any) { m["accepted"].(map[string]any)["amount"] = 10000 }), "JSON"},
		"amount negative":      {edit2(func(m map[string]any) { m["accepted"].(map[string]any)["amount"] = "-1" }), "amount"},
		"asset not address":    {edit2(func(m map[string]any) { m["accepted"].(map[string]any)["asset"] = "USDC" }), "asset"},
		"payTo short":          {edit2(func(m map[string]any) { m["accepted"].(map[string]any)["payTo"] = "0x1234" }), "payTo"},
		"timeout negative":     {edit2(func(m map[string]any) { m["accepted"].(map[string]any)["maxTimeoutSeconds"] = -5 }), "negative"},
		"timeout fractional":   {edit2(func(m map[string]any) { m["accepted"].(map[string]any)["maxTimeoutSeconds"] = 1.5 }), "JSON"},
		"extra not object":     {edit2(func(m map[string]any) { m["accepted"].(map[string]any)["extra"] = "x" }), "JSON"},
		"payload missing":      {edit2(func(m map[string]any) { delete(m, "payload") }), "payload is missing"},
		"payload null":         {edit1(func(m map[string]any) { m["payload"] = nil }), "payload is missing"},
		"payload array":        {edit1(func(m map[string]any) { m["payload"] = []any{} }), "JSON in exact payload"},
		"from missing":         {edit2(func(m map[string]any) { delete(authOf(m), "from") }), "from"},
		"to not hex":           {edit1(func(m map[string]any) { authOf(m)["to"] = "0x" + strings.Repeat("g", 40) }), "to"},
		"value number":         {edit1(func(m map[string]any) { authOf(m)["value"] = 10000 }), "JSON"},
		"value decimal point":  {edit1(func(m map[string]any) { authOf(m)["value"] = "100.5" }), "value"},
		"value over uint256":   {edit1(func(m map[string]any) { authOf(m)["value"] = strings.Repeat("9", 78) }), "value"},
		"value huge":           {edit1(func(m map[string]any) { authOf(m)["value"] = strings.Repeat("1", 5000) }), "value"},
		"validBefore huge":     {edit2(func(m map[string]any) { authOf(m)["validBefore"] = "99999999999999" }), "validBefore"},
		"validAfter negative":  {edit2(func(m map[string]any) { authOf(m)["validAfter"] = "-1" }), "validAfter"},
		"nonce short":          {edit2(func(m map[string]any) { authOf(m)["nonce"] = "0x1234" }), "nonce"},
		"signature missing":    {edit2(func(m map[string]any) { delete(m["payload"].(map[string]any), "signature") }), "signature"},
		"signature odd":        {edit2(func(m map[string]any) { m["payload"].(map[string]any)["signature"] = "0xabc" }), "signature"},
		"signature no 0x":      {edit2(func(m map[string]any) { m["payload"].(map[string]any)["signature"] = "abcd" }), "signature"},
		"extension wrong type": {edit2(func(m map[string]any) { m["extensions"] = []any{1} }), "JSON"},
		"payment id short": {edit2(func(m map[string]any) {
			m["extensions"] = map[string]any{"payment-identifier": map[string]any{"info": map[string]any{"id": "short"}}}
		}), "payment-identifier"},
		"payment id bad chars": {edit2(func(m map[string]any) {
			m["extensions"] = map[string]any{"payment-identifier": map[string]any{"info": map[string]any{"id": "pay_0123456789abcdef/../x"}}}
		}), "payment-identifier"},
		"payment id number": {edit2(func(m map[string]any) {
			m["extensions"] = map[string]any{"payment-identifier": map[string]any{"info": map[string]any{"id": 12}}}
		}), "payment-identifier"},
	}
	for name, tc := range cases {
		_, err := x402.DecodePaymentHeader(tc.value)
		require.ErrorIs(t, err, x402.ErrInvalidPayment, name)
		require.Contains(t, err.Error(), tc.msg, name)
		require.Less(t, len(err.Error()), 400, name)
	}
}

func TestPaymentIdentifierExtension(t *testing.T) {
	t.Parallel()
	v2 := fixtureNamed(t, "client-v2.json").ClientSent.HeaderValue
	withID := editPayment(t, v2, func(m map[string]any) {
		m["extensions"] = map[string]any{
			"payment-identifier": map[string]any{
				"schema": map[string]any{"type": "object"},
				"info":   map[string]any{"id": "pay_7d5d747be160e280504c099d984bcfe0"},
			},
			"bazaar": map[string]any{"info": map[string]any{}},
		}
	})
	p, err := x402.DecodePaymentHeader(withID)
	require.NoError(t, err)
	require.Equal(t, "pay_7d5d747be160e280504c099d984bcfe0", p.PaymentID)
	require.Contains(t, p.Extensions, "bazaar")

	// Echoed without an id (as advertised): no key.
	echoed := editPayment(t, v2, func(m map[string]any) {
		m["extensions"] = map[string]any{"payment-identifier": map[string]any{"info": map[string]any{"required": false}}}
	})
	p, err = x402.DecodePaymentHeader(echoed)
	require.NoError(t, err)
	require.Empty(t, p.PaymentID)
}

func TestMatch(t *testing.T) {
	t.Parallel()
	server := serverRequirement(t)
	v2, err := x402.DecodePaymentHeader(fixtureNamed(t, "client-v2.json").ClientSent.HeaderValue)
	require.NoError(t, err)
	v1, err := x402.DecodePaymentHeader(fixtureNamed(t, "client-v1.json").ClientSent.HeaderValue)
	require.NoError(t, err)
	require.NoError(t, x402.Match(server, v2))
	require.NoError(t, x402.Match(server, v1))

	// Equivalent spellings match.
	s := server
	s.Network = "base-sepolia"
	s.PayTo = strings.ToLower(s.PayTo)
	s.Asset = strings.ToUpper("0x036CbD53842c5426634e7929541eC2318f3dCF7e"[2:])
	s.Asset = "0x" + s.Asset
	s.Amount = "010000"
	require.NoError(t, x402.Match(s, v2))

	mutate := func(fn func(r *x402.Requirement)) x402.Requirement {
		r := server
		fn(&r)
		return r
	}
	cases := map[string]x402.Requirement{
		"scheme":  mutate(func(r *x402.Requirement) { r.Scheme = "upto" }),
		"network": mutate(func(r *x402.Requirement) { r.Network = "eip155:8453" }),
		"amount":  mutate(func(r *x402.Requirement) { r.Amount = "10001" }),
		"asset":   mutate(func(r *x402.Requirement) { r.Asset = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913" }),
		"payTo":   mutate(func(r *x402.Requirement) { r.PayTo = "0x1111111111111111111111111111111111111111" }),
	}
	for field, req := range cases {
		for _, p := range []*x402.Payment{v2, v1} {
			err := x402.Match(req, p)
			require.ErrorIs(t, err, x402.ErrRequirementMismatch, field)
			var me *x402.MismatchError
			require.True(t, errors.As(err, &me))
			if p.Version == 1 && field == "payTo" {
				// v1 states payTo only in the authorization
				require.Equal(t, "payTo", me.Field)
			} else {
				require.Equal(t, field, me.Field)
			}
			require.Contains(t, err.Error(), me.Field)
		}
	}

	// The signed authorization must agree with what the client claims.
	p := *v2
	p.Authorization.Value = "20000"
	var me *x402.MismatchError
	require.ErrorAs(t, x402.Match(server, &p), &me)
	require.Equal(t, "authorization.value", me.Field)
	require.Equal(t, x402.ReasonInvalidValue, me.Reason())
	p = *v2
	p.Authorization.To = "0x1111111111111111111111111111111111111111"
	require.ErrorAs(t, x402.Match(server, &p), &me)
	require.Equal(t, "authorization.to", me.Field)
	require.Equal(t, x402.ReasonRecipientMismatch, me.Reason())

	require.ErrorIs(t, x402.Match(server, nil), x402.ErrRequirementMismatch)
}

// The envelope decodes for any well-formed scheme: choosing and checking
// the scheme is the payment stage's (x402.Scheme), so a version 2 payment
// for another scheme keeps its raw payload and fills no EIP-3009 fields.
func TestDecodeKeepsOtherSchemesPayload(t *testing.T) {
	t.Parallel()
	raw := `{"x402Version":2,"accepted":{"scheme":"upto","network":"eip155:84532","amount":"500000",` +
		`"asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e","payTo":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C","maxTimeoutSeconds":60},` +
		`"payload":{"permit2Authorization":{"from":"0x1"},"signature":"0xab"}}`
	p, err := x402.ParsePaymentPayload([]byte(raw))
	require.NoError(t, err)
	require.Equal(t, "upto", p.Accepted.Scheme)
	require.Empty(t, p.Authorization.Nonce)
	require.Empty(t, p.Payer)
	require.JSONEq(t, `{"permit2Authorization":{"from":"0x1"},"signature":"0xab"}`, string(p.Payload))
	_, err = x402.ParsePaymentPayload([]byte(strings.Replace(raw, `"payload":{`, `"payload":[{`, 1) + "]"))
	require.ErrorIs(t, err, x402.ErrInvalidPayment, "a payload that is not an object")
}
