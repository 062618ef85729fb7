package channel_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/channel/channeltest"
)

// A channel whose payerAuthorizer is the zero address takes vouchers
// signed by the payer itself, and nothing else: not a made-up signature
// (its config is public onchain, so anyone could send one), not another
// key's.
func TestZeroPayerAuthorizerNeedsThePayersSignature(t *testing.T) {
	ctx := context.Background()
	e := channeltest.NewEnv(t, memory.NewKV(), channel.Config{})
	cc, err := e.Client.ChannelConfig(e.Req, channel.RandomSalt())
	require.NoError(t, err)
	cc.PayerAuthorizer = "0x0000000000000000000000000000000000000000"
	now := time.Now()
	pl, err := e.Client.DepositPayload(e.Req, cc, channeltest.Deposit, 1000, now.Add(-time.Minute), now.Add(time.Hour))
	require.NoError(t, err)
	p, err := channel.Envelope(e.Req, pl)
	require.NoError(t, err)
	h, err := e.Service.Begin(ctx, p, e.Req)
	require.NoError(t, err, "the payer's own signature")
	_, err = h.Commit(ctx, "1000")
	require.NoError(t, err)

	forged, err := e.Client.VoucherPayload(e.Req, cc, 2000)
	require.NoError(t, err)
	forged.Voucher.Signature = "0x" + strings.Repeat("11", 65)
	other, err := secp256k1.GeneratePrivateKey()
	require.NoError(t, err)
	byOther, err := channel.NewClient(other).VoucherPayload(e.Req, cc, 2000)
	require.NoError(t, err)
	for name, v := range map[string]*channel.Payload{"made-up signature": forged, "another key": byOther} {
		vp, err := channel.Envelope(e.Req, v)
		require.NoError(t, err)
		_, err = e.Service.Begin(ctx, vp, e.Req)
		require.Equal(t, channel.ReasonVoucherSignature, channel.Reason(err), name)
	}
	id, err := cc.ID(84532)
	require.NoError(t, err)
	st, err := e.Service.Load(ctx, id)
	require.NoError(t, err)
	require.EqualValues(t, 1000, st.Charged, "nothing charged on a voucher the payer did not sign")

	genuine, err := e.Client.VoucherPayload(e.Req, cc, 2000)
	require.NoError(t, err)
	vp, err := channel.Envelope(e.Req, genuine)
	require.NoError(t, err)
	h, err = e.Service.Begin(ctx, vp, e.Req)
	require.NoError(t, err, "the payer's voucher")
	_, err = h.Commit(ctx, "1000")
	require.NoError(t, err)
}

// A voucher signed with v = 0 or 1 (as some signers write it) is kept, and
// so claimed, with v = 27 or 28, which every onchain ECDSA check accepts.
func TestVoucherSignatureKeptWithCanonicalV(t *testing.T) {
	ctx := context.Background()
	e := channeltest.NewEnv(t, memory.NewKV(), channel.Config{})
	pl, err := e.Client.VoucherPayload(e.Req, e.Config, 2000)
	require.NoError(t, err)
	sig := []byte(pl.Voucher.Signature)
	v := sig[len(sig)-2:]
	require.Contains(t, []string{"1b", "1c"}, string(v))
	low := map[string]string{"1b": "00", "1c": "01"}[string(v)]
	pl.Voucher.Signature = pl.Voucher.Signature[:len(sig)-2] + low
	p, err := channel.Envelope(e.Req, pl)
	require.NoError(t, err)
	h, err := e.Service.Begin(ctx, p, e.Req)
	require.NoError(t, err)
	_, err = h.Commit(ctx, "1000")
	require.NoError(t, err)
	st := e.State(t)
	require.Equal(t, string(v), st.Signature[len(st.Signature)-2:], "stored with v = 27 or 28")
}
