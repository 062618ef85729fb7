package channel_test

import (
	"encoding/hex"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/schemetest"
)

const (
	testKeyHex   = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
	testAuth     = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
	testReceiver = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
)

func testKey(t testing.TB) *secp256k1.PrivateKey {
	t.Helper()
	b, err := hex.DecodeString(testKeyHex)
	require.NoError(t, err)
	return secp256k1.PrivKeyFromBytes(b)
}

func testOffer() x402.Offer {
	return x402.Offer{
		Network:  "eip155:84532",
		Price:    decimal.RequireFromString("0.001"),
		MaxPrice: decimal.RequireFromString("0.001"),
		PayTo:    testReceiver,
		Resource: x402.ResourceInfo{URL: "https://api.example/llm"},
	}
}

func newScheme(t testing.TB) *channel.Scheme {
	t.Helper()
	s, err := channel.NewScheme(channel.SchemeConfig{ReceiverAuthorizer: testAuth})
	require.NoError(t, err)
	return s
}

// depositPayment signs a deposit of 100000 with the first voucher, on a
// fresh channel.
func depositPayment(t testing.TB, cl *channel.Client, req x402.Requirement, signedAt time.Time, validFor time.Duration) (*x402.Payment, channel.ChannelConfig) {
	t.Helper()
	cfg, err := cl.ChannelConfig(req, channel.RandomSalt())
	require.NoError(t, err)
	amount := parseU(t, req.Amount)
	pl, err := cl.DepositPayload(req, cfg, 100000, amount, signedAt.Add(-time.Second), signedAt.Add(validFor))
	require.NoError(t, err)
	p, err := channel.Envelope(req, pl)
	require.NoError(t, err)
	return p, cfg
}

func TestSchemeConformance(t *testing.T) {
	cl := channel.NewClient(testKey(t))
	schemetest.Run(t, func(t *testing.T) schemetest.Target {
		return schemetest.Target{
			Scheme: newScheme(t),
			Offer:  testOffer(),
			Pay: func(t testing.TB, req x402.Requirement, signedAt time.Time, validFor time.Duration) *x402.Payment {
				p, _ := depositPayment(t, cl, req, signedAt, validFor)
				return p
			},
		}
	})
}

func TestRequirementEntry(t *testing.T) {
	s := newScheme(t)
	req, err := s.Requirement(testOffer())
	require.NoError(t, err)
	require.Equal(t, "batch-settlement", req.Scheme)
	require.Equal(t, "1000", req.Amount)
	require.Equal(t, testAuth, req.Extra["receiverAuthorizer"])
	require.EqualValues(t, 900, req.Extra["withdrawDelay"])
	require.Equal(t, "USDC", req.Extra["name"])
	require.Equal(t, "2", req.Extra["version"])

	s2, err := channel.NewScheme(channel.SchemeConfig{ReceiverAuthorizer: testAuth, WithdrawDelay: 3600})
	require.NoError(t, err)
	req2, err := s2.Requirement(testOffer())
	require.NoError(t, err)
	require.EqualValues(t, 3600, req2.Extra["withdrawDelay"])

	for _, cfg := range []channel.SchemeConfig{
		{ReceiverAuthorizer: "nope"},
		{ReceiverAuthorizer: "0x0000000000000000000000000000000000000000"},
		{ReceiverAuthorizer: testAuth, WithdrawDelay: 60},
		{ReceiverAuthorizer: testAuth, WithdrawDelay: 31 * 24 * 3600},
	} {
		_, err := channel.NewScheme(cfg)
		require.ErrorIs(t, err, x402.ErrInvalidRequirement)
	}
}

func TestReceiverAuthorizerFromSupported(t *testing.T) {
	sup := &x402.SupportedResponse{Kinds: []x402.SupportedKind{
		{X402Version: 2, Scheme: "exact", Network: "eip155:84532"},
		{X402Version: 2, Scheme: "batch-settlement", Network: "eip155:84532", Extra: map[string]any{"receiverAuthorizer": testAuth}},
	}}
	a, ok := channel.ReceiverAuthorizer(sup, "base-sepolia")
	require.True(t, ok)
	require.Equal(t, testAuth, a)
	_, ok = channel.ReceiverAuthorizer(sup, "eip155:8453")
	require.False(t, ok)
	_, ok = channel.ReceiverAuthorizer(nil, "eip155:84532")
	require.False(t, ok)
}

// The real client's deposit passes Check at its signing time, and every
// field the server binds is refused when it differs.
func TestCheckFixtureAndMismatches(t *testing.T) {
	f := loadFixture(t)
	s := newScheme(t)
	req := fixtureRequirement(t, f)
	p, err := channel.Envelope(req, f.DepositPayload.Payload)
	require.NoError(t, err)
	at := time.Unix(f.SignedAtUnix, 0)
	g, err := s.Check(p, req, at)
	require.NoError(t, err)
	require.Equal(t, f.Payer, g.Payer)
	require.Equal(t, "1000", g.Amount)

	_, err = s.Check(p, req, at.Add(2*time.Hour))
	require.ErrorIs(t, err, x402.ErrRequirementMismatch)
	require.Equal(t, channel.ReasonValidBefore, channel.Reason(err))

	mut := func(f func(r *x402.Requirement)) x402.Requirement {
		r := req
		r.Extra = map[string]any{}
		for k, v := range req.Extra {
			r.Extra[k] = v
		}
		f(&r)
		return r
	}
	for reason, r := range map[string]x402.Requirement{
		channel.ReasonReceiverMismatch: mut(func(r *x402.Requirement) { r.PayTo = "0x1111111111111111111111111111111111111111" }),
		channel.ReasonTokenMismatch:    mut(func(r *x402.Requirement) { r.Asset = "0x1111111111111111111111111111111111111111" }),
		channel.ReasonReceiverAuthMismatch: mut(func(r *x402.Requirement) {
			r.Extra["receiverAuthorizer"] = "0x1111111111111111111111111111111111111111"
		}),
		channel.ReasonWithdrawDelayMismatch: mut(func(r *x402.Requirement) { r.Extra["withdrawDelay"] = 1800 }),
		channel.ReasonNetworkMismatch:       mut(func(r *x402.Requirement) { r.Network = "eip155:8453" }),
	} {
		_, err := s.Check(p, r, at)
		require.ErrorIs(t, err, x402.ErrRequirementMismatch, reason)
		require.Equal(t, reason, channel.Reason(err))
	}

	// Another signer's voucher, a channel id that is not the config's hash.
	other := *p
	pl, err := channel.DecodePayload(p.Payload)
	require.NoError(t, err)
	bad := *pl
	bad.Voucher.Signature = f.Voucher2000.Signature
	other.Payload = mustJSON(t, bad)
	_, err = s.Check(&other, req, at)
	require.ErrorIs(t, err, x402.ErrInvalidPayment)
	require.Equal(t, channel.ReasonVoucherSignature, channel.Reason(err))
	bad = *pl
	bad.ChannelConfig.Salt = "0x" + "01" + f.ChannelConfig.Salt[4:]
	other.Payload = mustJSON(t, bad)
	_, err = s.Check(&other, req, at)
	require.Equal(t, channel.ReasonChannelIDMismatch, channel.Reason(err))
	bad = *pl
	dep := *pl.Deposit
	auth := *dep.Authorization.ERC3009Authorization
	auth.Salt = channel.RandomSalt()
	dep.Authorization.ERC3009Authorization = &auth
	bad.Deposit = &dep
	other.Payload = mustJSON(t, bad)
	_, err = s.Check(&other, req, at)
	require.Equal(t, channel.ReasonReceiveSignature, channel.Reason(err))
}
