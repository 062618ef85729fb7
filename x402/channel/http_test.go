package channel_test

import (
	"context"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

// The same flow through the local facilitator's HTTP handler and x402's
// facilitator client, as a gateway runs it: /supported gives the receiver
// authorizer, deposits, claims, settles and refunds go over /settle, and
// the channel snapshot survives the JSON round trip.
func TestEndToEndOverHTTP(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.Unix(1796229648, 0)}
	fac, err := localfacilitator.New(localfacilitator.Config{Now: clk.Now})
	require.NoError(t, err)
	srv := httptest.NewServer(fac.Handler())
	defer srv.Close()
	hc, err := x402.NewFacilitatorClient(srv.URL, x402.FacilitatorConfig{})
	require.NoError(t, err)
	sup, err := hc.Supported(ctx)
	require.NoError(t, err)
	auth, ok := channel.ReceiverAuthorizer(sup, "eip155:84532")
	require.True(t, ok)
	sc, err := channel.NewScheme(channel.SchemeConfig{ReceiverAuthorizer: auth})
	require.NoError(t, err)
	jr := &journal{}
	svc, err := channel.New(memory.NewKVWithClock(clk.Now), channel.Config{Scheme: sc, Facilitator: hc, Journal: jr, Now: clk.Now})
	require.NoError(t, err)
	req, err := svc.Scheme().Requirement(testOffer())
	require.NoError(t, err)
	cl := channel.NewClient(testKey(t))
	cfg, err := cl.ChannelConfig(req, channel.RandomSalt())
	require.NoError(t, err)
	id, err := cfg.ID(84532)
	require.NoError(t, err)

	now := clk.Now()
	pl, err := cl.DepositPayload(req, cfg, 5000, 1000, now.Add(-time.Second), now.Add(time.Minute))
	require.NoError(t, err)
	p, err := channel.Envelope(req, pl)
	require.NoError(t, err)
	h, err := svc.Begin(ctx, p, req)
	require.NoError(t, err)
	_, err = h.Commit(ctx, "800")
	require.NoError(t, err)
	st, err := svc.Load(ctx, id)
	require.NoError(t, err)
	require.EqualValues(t, 5000, st.Balance, "mirrored from the facilitator's channelState")
	charged := uint64(800)
	for _, c := range []uint64{1000, 200} {
		vp, err := cl.VoucherPayload(req, cfg, charged+1000)
		require.NoError(t, err)
		p, err := channel.Envelope(req, vp)
		require.NoError(t, err)
		h, err := svc.Begin(ctx, p, req)
		require.NoError(t, err)
		_, err = h.Commit(ctx, strconv.FormatUint(c, 10))
		require.NoError(t, err)
		charged += c
	}
	cm, err := channel.NewClaimer(svc, channel.ClaimerConfig{Facilitator: hc, Threshold: 1})
	require.NoError(t, err)
	rep, err := cm.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, charged, rep.Settled)

	rp, err := cl.RefundPayload(req, cfg, charged, "1000")
	require.NoError(t, err)
	p, err = channel.Envelope(req, rp)
	require.NoError(t, err)
	rr, err := svc.Refund(ctx, p, req)
	require.NoError(t, err)
	require.Equal(t, "1000", rr.Amount)
	st, err = svc.Load(ctx, id)
	require.NoError(t, err)
	require.EqualValues(t, 4000, st.Balance)
	require.EqualValues(t, 1, st.RefundNonce)
	esc, _ := fac.Escrow().Channel(id)
	require.EqualValues(t, 4000, esc.Balance)
	require.Equal(t, charged, esc.TotalClaimed)
}
