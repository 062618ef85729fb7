package channel_test

import (
	"context"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/channel/channeltest"
)

// The scheme remembers a checked voucher payment only for the same
// requirement: the same payment against another receiver, asset, amount
// or network is checked afresh and refused.
func TestCheckedPaymentIsPerRequirement(t *testing.T) {
	e := channeltest.NewEnv(t, memory.NewKV(), channel.Config{})
	sc := e.Service.Scheme()
	p := e.Voucher(t, 2000)
	_, err := sc.Check(p, e.Req, timeNow())
	require.NoError(t, err)
	_, err = sc.Check(p, e.Req, timeNow())
	require.NoError(t, err, "again, from memory")
	for name, mutate := range map[string]func(r *x402.Requirement){
		"payTo":   func(r *x402.Requirement) { r.PayTo = "0x1111111111111111111111111111111111111111" },
		"asset":   func(r *x402.Requirement) { r.Asset = "0x2222222222222222222222222222222222222222" },
		"amount":  func(r *x402.Requirement) { r.Amount = "999" },
		"network": func(r *x402.Requirement) { r.Network = "eip155:8453" },
	} {
		other := e.Req
		other.Extra = map[string]any{}
		for k, v := range e.Req.Extra {
			other.Extra[k] = v
		}
		mutate(&other)
		_, err := sc.Check(p, other, timeNow())
		require.Error(t, err, name)
	}
	// And Begin after Check serves it once.
	h, err := e.Service.Begin(context.Background(), p, e.Req)
	require.NoError(t, err)
	_, err = h.Commit(context.Background(), "1000")
	require.NoError(t, err)
	_, err = e.Service.Begin(context.Background(), p, e.Req)
	require.Equal(t, channel.ReasonCumulativeAmountMismatch, channel.Reason(err), "the voucher is spent")
}

// A payer whose vouchers keep being charged gets a KeyTable; vouchers
// are then checked with it, and one signed by another key for the same
// channel is still refused. Vouchers only checked, never charged, earn
// nothing.
func TestVoucherKeyTable(t *testing.T) {
	ctx := context.Background()
	e := channeltest.NewEnv(t, memory.NewKV(), channel.Config{})
	sc := e.Service.Scheme()
	for i := 0; i < 40; i++ {
		_, err := sc.Check(e.Voucher(t, uint64(50_000+i)), e.Req, timeNow())
		require.NoError(t, err)
	}
	time.Sleep(50 * time.Millisecond)
	require.False(t, sc.HasKeyTable(e.Config.PayerAuthorizer), "checked only")
	charged := e.State(t).Charged
	require.Eventually(t, func() bool {
		for i := 0; i < 8; i++ {
			h, err := e.Service.Begin(ctx, e.Voucher(t, charged+e.Amount), e.Req)
			require.NoError(t, err)
			_, err = h.Commit(ctx, "1")
			require.NoError(t, err)
			charged++
		}
		return sc.HasKeyTable(e.Config.PayerAuthorizer)
	}, 30*time.Second, 10*time.Millisecond)
	_, err := sc.Check(e.Voucher(t, 7777), e.Req, timeNow())
	require.NoError(t, err, "checked with the table")

	other := channel.NewClient(testKey2(t))
	v, err := other.Voucher(e.Config, 84532, 7777)
	require.NoError(t, err)
	pl := &channel.Payload{Type: channel.TypeVoucher, ChannelConfig: e.Config, Voucher: v}
	p, err := channel.Envelope(e.Req, pl)
	require.NoError(t, err)
	_, err = sc.Check(p, e.Req, timeNow())
	require.Equal(t, channel.ReasonVoucherSignature, channel.Reason(err))
}

func testKey2(t *testing.T) *secp256k1.PrivateKey {
	k, err := secp256k1.GeneratePrivateKey()
	require.NoError(t, err)
	return k
}
