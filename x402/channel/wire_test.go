package channel_test

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
)

const fixtureChain = 84532

type fixture struct {
	SignedAtUnix   int64                 `json:"signedAtUnix"`
	PrivateKey     string                `json:"privateKey"`
	Payer          string                `json:"payer"`
	Requirement    json.RawMessage       `json:"requirement"`
	ChannelConfig  channel.ChannelConfig `json:"channelConfig"`
	ChannelID      string                `json:"channelId"`
	DepositPayload struct {
		Payload json.RawMessage `json:"payload"`
	} `json:"depositPayload"`
	DepositCheck struct {
		ERC3009Nonce string `json:"erc3009Nonce"`
		Digest       string `json:"digest"`
		Voucher      struct {
			Digest string `json:"digest"`
		} `json:"voucher"`
	} `json:"depositCheck"`
	Voucher2000      channel.Voucher `json:"voucher2000"`
	Voucher2000Check struct {
		Digest string `json:"digest"`
	} `json:"voucher2000Check"`
}

func loadFixture(t testing.TB) fixture {
	t.Helper()
	raw, err := os.ReadFile("testdata/client-batch-settlement.json")
	require.NoError(t, err)
	var f fixture
	require.NoError(t, json.Unmarshal(raw, &f))
	return f
}

func fixtureRequirement(t testing.TB, f fixture) x402.Requirement {
	t.Helper()
	var pr x402.PaymentRequirements
	require.NoError(t, json.Unmarshal(f.Requirement, &pr))
	return x402.RequirementFromV2(pr, x402.ResourceInfo{URL: "https://api.example/llm"})
}

func hexOf(w [32]byte) string {
	const digits = "0123456789abcdef"
	b := []byte("0x")
	for _, c := range w {
		b = append(b, digits[c>>4], digits[c&15])
	}
	return string(b)
}

func TestFixtureChannelID(t *testing.T) {
	f := loadFixture(t)
	id, err := f.ChannelConfig.ID(fixtureChain)
	require.NoError(t, err)
	require.Equal(t, f.ChannelID, id)

	other := f.ChannelConfig
	other.WithdrawDelay++
	id2, err := other.ID(fixtureChain)
	require.NoError(t, err)
	require.NotEqual(t, f.ChannelID, id2)
	id3, err := f.ChannelConfig.ID(8453)
	require.NoError(t, err)
	require.NotEqual(t, f.ChannelID, id3, "the chain is bound into the id")
}

func TestFixtureDeposit(t *testing.T) {
	f := loadFixture(t)
	p, err := channel.DecodePayload(f.DepositPayload.Payload)
	require.NoError(t, err)
	require.Equal(t, channel.TypeDeposit, p.Type)

	nonce, err := channel.DepositNonce(p.Voucher.ChannelID, p.Deposit.Authorization.ERC3009Authorization.Salt)
	require.NoError(t, err)
	require.Equal(t, f.DepositCheck.ERC3009Nonce, nonce)

	req := fixtureRequirement(t, f)
	token := channel.TokenDomain(req, fixtureChain)
	d, err := p.ReceiveDigest(token)
	require.NoError(t, err)
	require.Equal(t, f.DepositCheck.Digest, hexOf(d))
	signer, err := p.DepositSigner(token)
	require.NoError(t, err)
	require.Equal(t, f.Payer, signer)

	vd, err := p.Voucher.Digest(fixtureChain)
	require.NoError(t, err)
	require.Equal(t, f.DepositCheck.Voucher.Digest, hexOf(vd))
	vs, err := p.Voucher.Signer(fixtureChain)
	require.NoError(t, err)
	require.Equal(t, f.ChannelConfig.PayerAuthorizer, vs)

	// Tampered copies: another amount, another salt, another token domain.
	tampered := *p
	dep := *p.Deposit
	dep.Amount = "100001"
	tampered.Deposit = &dep
	s, err := tampered.DepositSigner(token)
	require.NoError(t, err)
	require.NotEqual(t, f.Payer, s)
	wrongDomain := token
	wrongDomain.Name = "USD Coin"
	s, err = p.DepositSigner(wrongDomain)
	require.NoError(t, err)
	require.NotEqual(t, f.Payer, s)
}

func TestFixtureVoucher2000(t *testing.T) {
	f := loadFixture(t)
	d, err := f.Voucher2000.Digest(fixtureChain)
	require.NoError(t, err)
	require.Equal(t, f.Voucher2000Check.Digest, hexOf(d))
	s, err := f.Voucher2000.Signer(fixtureChain)
	require.NoError(t, err)
	require.Equal(t, f.Payer, s)

	for name, mut := range map[string]func(v *channel.Voucher){
		"amount":  func(v *channel.Voucher) { v.MaxClaimableAmount = "2001" },
		"channel": func(v *channel.Voucher) { v.ChannelID = "0x" + strings.Repeat("11", 32) },
	} {
		v := f.Voucher2000
		mut(&v)
		s, err := v.Signer(fixtureChain)
		require.NoError(t, err, name)
		require.NotEqual(t, f.Payer, s, name)
	}
	s, err = f.Voucher2000.Signer(1)
	require.NoError(t, err)
	require.NotEqual(t, f.Payer, s, "another chain")
}

func TestDecodePayloadRefusesMalformed(t *testing.T) {
	f := loadFixture(t)
	var base map[string]any
	require.NoError(t, json.Unmarshal(f.DepositPayload.Payload, &base))
	clone := func() map[string]any {
		raw, _ := json.Marshal(base)
		var m map[string]any
		_ = json.Unmarshal(raw, &m)
		return m
	}
	cases := map[string]func(m map[string]any){
		"unknown field":        func(m map[string]any) { m["extra"] = 1 },
		"bad type":             func(m map[string]any) { m["type"] = "claim" },
		"voucher with deposit": func(m map[string]any) { m["type"] = "voucher" },
		"deposit without deposit": func(m map[string]any) {
			delete(m, "deposit")
		},
		"refund with deposit": func(m map[string]any) { m["type"] = "refund" },
		"leading zero":        func(m map[string]any) { m["voucher"].(map[string]any)["maxClaimableAmount"] = "01000" },
		"negative":            func(m map[string]any) { m["voucher"].(map[string]any)["maxClaimableAmount"] = "-1" },
		"over uint128": func(m map[string]any) {
			m["voucher"].(map[string]any)["maxClaimableAmount"] = "340282366920938463463374607431768211456"
		},
		"short signature": func(m map[string]any) { m["voucher"].(map[string]any)["signature"] = "0x12" },
		"bad payer":       func(m map[string]any) { m["channelConfig"].(map[string]any)["payer"] = "0x12" },
		"zero receiverAuth": func(m map[string]any) {
			m["channelConfig"].(map[string]any)["receiverAuthorizer"] = "0x0000000000000000000000000000000000000000"
		},
		"delay too short":     func(m map[string]any) { m["channelConfig"].(map[string]any)["withdrawDelay"] = 899 },
		"delay too long":      func(m map[string]any) { m["channelConfig"].(map[string]any)["withdrawDelay"] = 30*24*3600 + 1 },
		"delay fraction":      func(m map[string]any) { m["channelConfig"].(map[string]any)["withdrawDelay"] = 900.5 },
		"delay string":        func(m map[string]any) { m["channelConfig"].(map[string]any)["withdrawDelay"] = "900" },
		"zero deposit":        func(m map[string]any) { m["deposit"].(map[string]any)["amount"] = "0" },
		"permit2 deposit":     func(m map[string]any) { m["deposit"].(map[string]any)["authorization"] = map[string]any{} },
		"bad salt":            func(m map[string]any) { m["channelConfig"].(map[string]any)["salt"] = "0x00" },
		"deposit with amount": func(m map[string]any) { m["amount"] = "5" },
		"bad validBefore": func(m map[string]any) {
			m["deposit"].(map[string]any)["authorization"].(map[string]any)["erc3009Authorization"].(map[string]any)["validBefore"] = "x"
		},
		"unknown deposit field": func(m map[string]any) { m["deposit"].(map[string]any)["x"] = 1 },
	}
	for name, mut := range cases {
		m := clone()
		mut(m)
		raw, err := json.Marshal(m)
		require.NoError(t, err)
		_, err = channel.DecodePayload(raw)
		require.ErrorIs(t, err, x402.ErrInvalidPayment, name)
	}
	for _, raw := range []string{"", "null", "[]", `{"type":"voucher"} {}`, `"x"`} {
		_, err := channel.DecodePayload(json.RawMessage(raw))
		require.ErrorIs(t, err, x402.ErrInvalidPayment, raw)
	}

	// A refund: zero-charge voucher, optional positive amount.
	m := clone()
	m["type"] = "refund"
	delete(m, "deposit")
	m["amount"] = "1500"
	raw, _ := json.Marshal(m)
	p, err := channel.DecodePayload(raw)
	require.NoError(t, err)
	require.Equal(t, "1500", p.Amount)
	m["amount"] = "0"
	raw, _ = json.Marshal(m)
	_, err = channel.DecodePayload(raw)
	require.ErrorIs(t, err, x402.ErrInvalidPayment)
}

func FuzzDecodePayload(f *testing.F) {
	fx := loadFixture(f)
	f.Add([]byte(fx.DepositPayload.Payload))
	v, _ := json.Marshal(map[string]any{"type": "voucher", "channelConfig": fx.ChannelConfig, "voucher": fx.Voucher2000})
	f.Add(v)
	f.Add([]byte(`{"type":"refund"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := channel.DecodePayload(raw)
		if err != nil {
			require.ErrorIs(t, err, x402.ErrInvalidPayment)
			return
		}
		// Whatever decodes hashes without error and survives a round trip.
		_, err = p.ChannelConfig.ID(fixtureChain)
		require.NoError(t, err)
		_, err = p.Voucher.Digest(fixtureChain)
		require.NoError(t, err)
		again, err := json.Marshal(p)
		require.NoError(t, err)
		p2, err := channel.DecodePayload(again)
		require.NoError(t, err)
		require.Equal(t, p, p2)
	})
}

func mustJSON(t testing.TB, v any) json.RawMessage {
	t.Helper()
	raw, err := json.Marshal(v)
	require.NoError(t, err)
	return raw
}

func parseU(t testing.TB, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 64)
	require.NoError(t, err)
	return n
}
