package channel_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
)

// refusing is a facilitator whose /verify refuses and counts its calls.
type refusing struct {
	x402.Facilitator
	verifies atomic.Int64
}

func (r *refusing) Verify(context.Context, x402.FacilitatorRequest) (*x402.VerifyResponse, error) {
	r.verifies.Add(1)
	return &x402.VerifyResponse{IsValid: false, InvalidReason: "invalid_batch_settlement_evm_channel_not_found"}, nil
}

func TestServiceRules(t *testing.T) {
	ctx := context.Background()
	f := newFlow(t)

	// A voucher on a channel the server does not know: deposit first.
	_, err := f.svc.Begin(ctx, f.voucher(1000), f.req)
	require.Equal(t, channel.ReasonMissingChannel, channel.Reason(err))
	vr, err := f.svc.Scheme().VerifyLocal(ctx, f.voucher(1000), f.req)
	require.NoError(t, err)
	require.False(t, vr.IsValid)
	require.Equal(t, channel.ReasonMissingChannel, vr.InvalidReason)

	// A refund payload is not a request.
	rp, err := f.cl.RefundPayload(f.req, f.cfg, 0, "")
	require.NoError(t, err)
	refund, err := channel.Envelope(f.req, rp)
	require.NoError(t, err)
	_, err = f.svc.Begin(ctx, refund, f.req)
	require.Equal(t, channel.ReasonPayloadType, channel.Reason(err))
	_, err = f.svc.Refund(ctx, f.voucher(1000), f.req)
	require.Equal(t, channel.ReasonPayloadType, channel.Reason(err))
	_, err = f.svc.Refund(ctx, refund, f.req)
	require.Equal(t, channel.ReasonMissingChannel, channel.Reason(err))

	// The deposit's first voucher must be exactly the per-request amount,
	// and covered by the deposit.
	now := f.clk.Now()
	for _, tc := range []struct {
		deposit, max uint64
		reason       string
	}{
		{10000, 999, channel.ReasonCumulativeAmountMismatch},
		{500, 1000, channel.ReasonCumulativeExceedsBalance},
	} {
		pl, err := f.cl.DepositPayload(f.req, f.cfg, tc.deposit, tc.max, now.Add(-time.Second), now.Add(time.Minute))
		require.NoError(t, err)
		p, err := channel.Envelope(f.req, pl)
		require.NoError(t, err)
		_, err = f.svc.Begin(ctx, p, f.req)
		require.Equal(t, tc.reason, channel.Reason(err))
	}
	_, ok := f.fac.Escrow().Channel(f.id)
	require.False(t, ok, "a refused deposit is never executed")

	// Open the channel; the voucher verifies locally while fresh.
	pl, err := f.cl.DepositPayload(f.req, f.cfg, 10000, 1000, now.Add(-time.Second), now.Add(time.Minute))
	require.NoError(t, err)
	p, err := channel.Envelope(f.req, pl)
	require.NoError(t, err)
	vr, err = f.svc.Scheme().VerifyLocal(ctx, p, f.req)
	require.NoError(t, err)
	require.Equal(t, channel.ReasonPayloadType, vr.InvalidReason, "deposits go to the facilitator")
	h, err := f.svc.Begin(ctx, p, f.req)
	require.NoError(t, err)
	_, err = h.Commit(ctx, "1000")
	require.NoError(t, err)
	f.charged = 1000
	vr, err = f.svc.Scheme().VerifyLocal(ctx, f.voucher(3000), f.req)
	require.NoError(t, err)
	require.Equal(t, channel.ReasonCumulativeAmountMismatch, vr.InvalidReason)

	// Past FreshFor the mirror is stale: VerifyLocal declines, and Begin
	// asks the facilitator, whose refusal stands.
	f.clk.Add(6 * time.Minute)
	vr, err = f.svc.Scheme().VerifyLocal(ctx, f.voucher(2000), f.req)
	require.NoError(t, err)
	require.False(t, vr.IsValid)
	ref := &refusing{Facilitator: f.fac}
	svc2, err := channel.New(f.store, channel.Config{Scheme: f.svc.Scheme(), Facilitator: ref, Now: f.clk.Now, Prefix: f.svc.Prefix()})
	require.NoError(t, err)
	_, err = svc2.Begin(ctx, f.voucher(2000), f.req)
	require.ErrorIs(t, err, x402.ErrInvalidPayment)
	require.EqualValues(t, 1, ref.verifies.Load())
	// The refusal released the channel.
	h, err = f.svc.Begin(ctx, f.voucher(2000), f.req)
	require.NoError(t, err)
	require.NoError(t, h.Abort(ctx))
	require.NoError(t, h.Abort(ctx), "aborting twice is harmless")
	_, err = h.Commit(ctx, "1")
	require.Error(t, err, "an aborted hold cannot commit")
}

func TestRefundRules(t *testing.T) {
	ctx := context.Background()
	f := newFlow(t)
	now := f.clk.Now()
	pl, err := f.cl.DepositPayload(f.req, f.cfg, 10000, 1000, now.Add(-time.Second), now.Add(time.Minute))
	require.NoError(t, err)
	p, err := channel.Envelope(f.req, pl)
	require.NoError(t, err)
	h, err := f.svc.Begin(ctx, p, f.req)
	require.NoError(t, err)
	_, err = h.Commit(ctx, "400")
	require.NoError(t, err)
	refund := func(charged uint64, amount string) (*x402.SettleResponse, error) {
		rp, err := f.cl.RefundPayload(f.req, f.cfg, charged, amount)
		require.NoError(t, err)
		p, err := channel.Envelope(f.req, rp)
		require.NoError(t, err)
		return f.svc.Refund(ctx, p, f.req)
	}
	// The refund voucher must be zero-charge: exactly what was charged.
	_, err = refund(1000, "")
	var me *channel.MismatchError
	require.ErrorAs(t, err, &me)
	require.Equal(t, "400", me.Want)
	// At most the unclaimed remainder.
	_, err = refund(400, "9601")
	require.Equal(t, channel.ReasonRefundAmountInvalid, channel.Reason(err))
	esc, _ := f.fac.Escrow().Channel(f.id)
	require.EqualValues(t, 10000, esc.Balance, "a refused refund moves nothing")
	resp, err := refund(400, "600")
	require.NoError(t, err)
	require.Equal(t, "600", resp.Amount)
	require.Regexp(t, `^0x[0-9a-f]{64}$`, resp.Transaction)
	_, has := resp.Extra[channel.ExtraChargedAmount]
	require.False(t, has, "a refund answer carries no chargedAmount")
	st, err := f.svc.Load(ctx, f.id)
	require.NoError(t, err)
	require.EqualValues(t, 9400, st.Balance)
	require.EqualValues(t, 400, st.ClaimedUpTo, "the charge was claimed with the refund")
	// Requests go on after a partial refund.
	f.charged = 400
	f.pay(1000)
}

// With BusyWait a second request waits for the first instead of being
// refused; without, it is refused at once.
func TestBusyWait(t *testing.T) {
	ctx := context.Background()
	f := newFlow(t)
	now := f.clk.Now()
	pl, err := f.cl.DepositPayload(f.req, f.cfg, 10000, 1000, now.Add(-time.Second), now.Add(time.Minute))
	require.NoError(t, err)
	p, err := channel.Envelope(f.req, pl)
	require.NoError(t, err)
	h, err := f.svc.Begin(ctx, p, f.req)
	require.NoError(t, err)
	_, err = h.Commit(ctx, "1000")
	require.NoError(t, err)
	waiting, err := channel.New(f.store, channel.Config{Scheme: f.svc.Scheme(), Facilitator: f.fac, Now: f.clk.Now, Prefix: f.svc.Prefix(), BusyWait: 10 * time.Second})
	require.NoError(t, err)

	v := f.voucher(2000)
	first, err := f.svc.Begin(ctx, v, f.req)
	require.NoError(t, err)
	_, err = f.svc.Begin(ctx, v, f.req)
	require.ErrorIs(t, err, channel.ErrBusy)
	done := make(chan error, 1)
	go func() {
		h, err := waiting.Begin(ctx, v, f.req)
		if err == nil {
			_, err = h.Commit(ctx, "1000")
		}
		done <- err
	}()
	require.NoError(t, first.Abort(ctx))
	require.NoError(t, <-done)
	st, err := f.svc.Load(ctx, f.id)
	require.NoError(t, err)
	require.EqualValues(t, 2000, st.Charged)

	short, err := channel.New(f.store, channel.Config{Scheme: f.svc.Scheme(), Prefix: f.svc.Prefix(), BusyWait: 30 * time.Millisecond})
	require.NoError(t, err)
	held, err := f.svc.Begin(ctx, f.voucher(3000), f.req)
	require.NoError(t, err)
	_, err = short.Begin(ctx, f.voucher(3000), f.req)
	require.ErrorIs(t, err, channel.ErrBusy, "the wait is bounded")
	require.NoError(t, held.Abort(ctx))
}
