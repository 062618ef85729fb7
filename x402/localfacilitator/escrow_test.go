package localfacilitator_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

type bsFixture struct {
	SignedAtUnix   int64           `json:"signedAtUnix"`
	PrivateKey     string          `json:"privateKey"`
	Payer          string          `json:"payer"`
	Requirement    json.RawMessage `json:"requirement"`
	ChannelID      string          `json:"channelId"`
	DepositPayload struct {
		Payload json.RawMessage `json:"payload"`
	} `json:"depositPayload"`
	Voucher2000 channel.Voucher `json:"voucher2000"`
}

func loadBS(t testing.TB) (bsFixture, x402.Requirement) {
	t.Helper()
	raw, err := os.ReadFile("testdata/batchsettlement/client-batch-settlement.json")
	require.NoError(t, err)
	var f bsFixture
	require.NoError(t, json.Unmarshal(raw, &f))
	var pr x402.PaymentRequirements
	require.NoError(t, json.Unmarshal(f.Requirement, &pr))
	return f, x402.RequirementFromV2(pr, x402.ResourceInfo{})
}

func bsRequest(t testing.TB, req x402.Requirement, payload any) x402.FacilitatorRequest {
	t.Helper()
	p, err := channel.Envelope(req, payload)
	require.NoError(t, err)
	return x402.FacilitatorRequest{Payment: p, Requirement: req}
}

// The real client's deposit verifies and settles against the emulated
// escrow; its later voucher verifies; the deposit cannot be replayed.
func TestEscrowFixtureDeposit(t *testing.T) {
	ctx := context.Background()
	f, req := loadBS(t)
	now := time.Unix(f.SignedAtUnix, 0)
	fac, err := localfacilitator.New(localfacilitator.Config{Now: func() time.Time { return now }})
	require.NoError(t, err)
	dep := bsRequest(t, req, f.DepositPayload.Payload)
	vr, err := fac.Verify(ctx, dep)
	require.NoError(t, err)
	require.True(t, vr.IsValid, vr.InvalidReason)
	require.Equal(t, f.Payer, vr.Payer)

	sr, err := fac.Settle(ctx, dep)
	require.NoError(t, err)
	require.True(t, sr.Success, sr.ErrorReason)
	require.Equal(t, "100000", sr.Amount)
	cs := sr.Extra[channel.ExtraChannelState].(channel.ChannelState)
	require.Equal(t, f.ChannelID, cs.ChannelID)
	require.Equal(t, "100000", cs.Balance)

	sr, err = fac.Settle(ctx, dep)
	require.NoError(t, err)
	require.False(t, sr.Success)
	require.Equal(t, x402.ReasonNonceUsed, sr.ErrorReason)

	pl, err := channel.DecodePayload(f.DepositPayload.Payload)
	require.NoError(t, err)
	v := bsRequest(t, req, channel.Payload{Type: channel.TypeVoucher, ChannelConfig: pl.ChannelConfig, Voucher: f.Voucher2000})
	vr, err = fac.Verify(ctx, v)
	require.NoError(t, err)
	require.True(t, vr.IsValid, vr.InvalidReason)
	// The answer carries the channel's onchain snapshot, as the
	// specification's /verify does.
	require.Equal(t, map[string]any{"channelId": f.ChannelID, "balance": "100000", "totalClaimed": "0",
		"withdrawRequestedAt": int64(0), "refundNonce": "0"}, vr.Extra)
	// A voucher is not something to settle.
	sr, err = fac.Settle(ctx, v)
	require.NoError(t, err)
	require.False(t, sr.Success)
}

func TestEscrowRefusesTamperedDeposit(t *testing.T) {
	ctx := context.Background()
	f, req := loadBS(t)
	now := time.Unix(f.SignedAtUnix, 0)
	fac, err := localfacilitator.New(localfacilitator.Config{Now: func() time.Time { return now }})
	require.NoError(t, err)
	pl, err := channel.DecodePayload(f.DepositPayload.Payload)
	require.NoError(t, err)
	for name, mut := range map[string]func(p *channel.Payload){
		"amount": func(p *channel.Payload) { d := *p.Deposit; d.Amount = "100001"; p.Deposit = &d },
		"salt": func(p *channel.Payload) {
			d := *p.Deposit
			a := *d.Authorization.ERC3009Authorization
			a.Salt = channel.RandomSalt()
			d.Authorization.ERC3009Authorization = &a
			p.Deposit = &d
		},
		"voucher": func(p *channel.Payload) { p.Voucher.MaxClaimableAmount = "999" },
	} {
		bad := *pl
		mut(&bad)
		sr, err := fac.Settle(ctx, bsRequest(t, req, bad))
		require.NoError(t, err, name)
		require.False(t, sr.Success, name)
		require.NotEmpty(t, sr.ErrorReason, name)
	}
	// Expired.
	late, err := localfacilitator.New(localfacilitator.Config{Now: func() time.Time { return now.Add(time.Hour) }})
	require.NoError(t, err)
	sr, err := late.Settle(ctx, bsRequest(t, req, pl))
	require.NoError(t, err)
	require.False(t, sr.Success)
	require.Equal(t, channel.ReasonValidBefore, sr.ErrorReason)
	_, ok := fac.Escrow().Channel(f.ChannelID)
	require.False(t, ok, "no refused deposit funded the channel")
}

// Claims are absolute totals; settle sweeps once; a timed withdrawal
// waits for its delay and is capped to what is unclaimed.
func TestEscrowClaimSettleWithdraw(t *testing.T) {
	ctx := context.Background()
	f, req := loadBS(t)
	now := time.Unix(f.SignedAtUnix, 0)
	fac, err := localfacilitator.New(localfacilitator.Config{Now: func() time.Time { return now }})
	require.NoError(t, err)
	sr, err := fac.Settle(ctx, bsRequest(t, req, f.DepositPayload.Payload))
	require.NoError(t, err)
	require.True(t, sr.Success)
	pl, _ := channel.DecodePayload(f.DepositPayload.Payload)
	claim := func(total string, sig string) *x402.SettleResponse {
		sr, err := fac.Settle(ctx, bsRequest(t, req, channel.ClaimPayload{Type: channel.TypeClaim, Claims: []channel.Claim{{
			Voucher: channel.ClaimVoucher{Channel: pl.ChannelConfig, MaxClaimableAmount: "2000"}, Signature: sig, TotalClaimed: total,
		}}}))
		require.NoError(t, err)
		return sr
	}
	require.False(t, claim("2001", f.Voucher2000.Signature).Success, "above the voucher")
	require.False(t, claim("1500", pl.Voucher.Signature).Success, "another voucher's signature")
	require.True(t, claim("1500", f.Voucher2000.Signature).Success)
	require.True(t, claim("1500", f.Voucher2000.Signature).Success, "a repeated claim is a no-op")
	require.True(t, claim("1000", f.Voucher2000.Signature).Success, "a lower total is a no-op")
	sweep := func() string {
		sr, err := fac.Settle(ctx, bsRequest(t, req, channel.SettlePayload{Type: channel.TypeSettle, Receiver: req.PayTo, Token: req.Asset}))
		require.NoError(t, err)
		require.True(t, sr.Success)
		return sr.Amount
	}
	require.Equal(t, "1500", sweep())
	require.Equal(t, "0", sweep())
	require.EqualValues(t, 1500, fac.Escrow().Settled(req.PayTo, req.Asset))

	require.Error(t, fac.Escrow().InitiateWithdraw(f.ChannelID, 100000), "more than the unclaimed escrow")
	require.NoError(t, fac.Escrow().InitiateWithdraw(f.ChannelID, 98500))
	ch, _ := fac.Escrow().Channel(f.ChannelID)
	require.Equal(t, now.Unix(), ch.WithdrawRequestedAt)
	_, err = fac.Escrow().FinalizeWithdraw(f.ChannelID)
	require.Error(t, err, "the delay has not passed")
	// The server claims before the delay runs out: the withdrawal is
	// capped to what stays unclaimed.
	require.True(t, claim("2000", f.Voucher2000.Signature).Success)
	now = now.Add(900 * time.Second)
	out, err := fac.Escrow().FinalizeWithdraw(f.ChannelID)
	require.NoError(t, err)
	require.EqualValues(t, 98000, out)
	ch, _ = fac.Escrow().Channel(f.ChannelID)
	require.EqualValues(t, 2000, ch.Balance)
	require.Zero(t, ch.WithdrawRequestedAt)
}

func TestEscrowRefundNonce(t *testing.T) {
	ctx := context.Background()
	f, req := loadBS(t)
	now := time.Unix(f.SignedAtUnix, 0)
	fac, err := localfacilitator.New(localfacilitator.Config{Now: func() time.Time { return now }})
	require.NoError(t, err)
	_, err = fac.Settle(ctx, bsRequest(t, req, f.DepositPayload.Payload))
	require.NoError(t, err)
	b, _ := hex.DecodeString(f.PrivateKey[2:])
	cl := channel.NewClient(secp256k1.PrivKeyFromBytes(b))
	pl, _ := channel.DecodePayload(f.DepositPayload.Payload)
	v, err := cl.Voucher(pl.ChannelConfig, 84532, 0)
	require.NoError(t, err)
	refund := func(nonce, amount string) *x402.SettleResponse {
		sr, err := fac.Settle(ctx, bsRequest(t, req, channel.RefundSettlePayload{
			Type: channel.TypeRefund, ChannelConfig: pl.ChannelConfig, Voucher: v, Amount: amount, RefundNonce: nonce, Claims: []channel.Claim{},
		}))
		require.NoError(t, err)
		return sr
	}
	sr := refund("0", "40000")
	require.True(t, sr.Success, sr.ErrorReason)
	require.Equal(t, "40000", sr.Amount)
	require.False(t, refund("0", "1").Success, "a used refund nonce")
	sr = refund("1", "999999")
	require.True(t, sr.Success)
	require.Equal(t, "60000", sr.Amount, "capped to the unclaimed escrow")
	ch, _ := fac.Escrow().Channel(f.ChannelID)
	require.Zero(t, ch.Balance)
	require.EqualValues(t, 2, ch.RefundNonce)
}

// FuzzEscrowSettle feeds arbitrary scheme payloads to the escrow after a
// real deposit: it never panics, and a channel's claimed total never
// exceeds its balance.
func FuzzEscrowSettle(f *testing.F) {
	fx, req := loadBS(f)
	pl, _ := channel.DecodePayload(fx.DepositPayload.Payload)
	seed := func(v any) []byte { b, _ := json.Marshal(v); return b }
	f.Add(seed(channel.ClaimPayload{Type: channel.TypeClaim, Claims: []channel.Claim{{
		Voucher: channel.ClaimVoucher{Channel: pl.ChannelConfig, MaxClaimableAmount: "2000"}, Signature: fx.Voucher2000.Signature, TotalClaimed: "2000"}}}))
	f.Add(seed(channel.SettlePayload{Type: channel.TypeSettle, Receiver: req.PayTo, Token: req.Asset}))
	f.Add(seed(channel.RefundSettlePayload{Type: channel.TypeRefund, ChannelConfig: pl.ChannelConfig, Voucher: fx.Voucher2000, Amount: "5", RefundNonce: "0"}))
	f.Add([]byte(fx.DepositPayload.Payload))
	now := time.Unix(fx.SignedAtUnix, 0)
	f.Fuzz(func(t *testing.T, raw []byte) {
		fac, err := localfacilitator.New(localfacilitator.Config{Now: func() time.Time { return now }})
		require.NoError(t, err)
		ctx := context.Background()
		_, err = fac.Settle(ctx, bsRequest(t, req, fx.DepositPayload.Payload))
		require.NoError(t, err)
		if !json.Valid(raw) {
			return
		}
		p, err := channel.Envelope(req, json.RawMessage(raw))
		if err != nil {
			return
		}
		r := x402.FacilitatorRequest{Payment: p, Requirement: req}
		_, err = fac.Verify(ctx, r)
		require.NoError(t, err)
		sr, err := fac.Settle(ctx, r)
		require.NoError(t, err)
		if !sr.Success {
			require.NotEmpty(t, sr.ErrorReason)
		}
		ch, ok := fac.Escrow().Channel(fx.ChannelID)
		require.True(t, ok)
		require.LessOrEqual(t, ch.TotalClaimed, ch.Balance)
	})
}
