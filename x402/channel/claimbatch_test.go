package channel_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
)

// claimSpy records the payload size of every claim call and refuses the
// calls that name a channel in refuse, as the escrow refuses a whole
// batch for one bad row.
type claimSpy struct {
	x402.Facilitator
	mu     sync.Mutex
	sizes  []int
	refuse map[string]bool
}

func (f *claimSpy) Settle(ctx context.Context, req x402.FacilitatorRequest) (*x402.SettleResponse, error) {
	var pl channel.ClaimPayload
	if json.Unmarshal(req.Payment.Payload, &pl) == nil && pl.Type == channel.TypeClaim {
		f.mu.Lock()
		f.sizes = append(f.sizes, len(req.Payment.Raw))
		bad := false
		for _, c := range pl.Claims {
			id, _ := c.Voucher.Channel.ID(84532)
			bad = bad || f.refuse[id]
		}
		f.mu.Unlock()
		if bad {
			return &x402.SettleResponse{Success: false, ErrorReason: channel.ReasonCumulativeExceedsBalance, Network: req.Requirement.Network}, nil
		}
	}
	return f.Facilitator.Settle(ctx, req)
}

// openChannels opens n channels on f's service, each charged 100.
func openChannels(t *testing.T, f *flow, n int) map[string]uint64 {
	ctx := context.Background()
	now := f.clk.Now()
	want := map[string]uint64{}
	for range n {
		cfg, err := f.cl.ChannelConfig(f.req, channel.RandomSalt())
		require.NoError(t, err)
		pl, err := f.cl.DepositPayload(f.req, cfg, 5000, 1000, now.Add(-time.Second), now.Add(time.Minute))
		require.NoError(t, err)
		p, err := channel.Envelope(f.req, pl)
		require.NoError(t, err)
		h, err := f.svc.Begin(ctx, p, f.req)
		require.NoError(t, err)
		_, err = h.Commit(ctx, "100")
		require.NoError(t, err)
		id, _ := cfg.ID(84532)
		want[id] = 100
	}
	return want
}

// A claim of more channels than one payload holds (a facilitator parses
// it within x402.MaxHeaderBytes) is split: every channel is claimed.
func TestClaimSplitsOversizedBatches(t *testing.T) {
	f := newFlow(t)
	want := openChannels(t, f, 60)
	spy := &claimSpy{Facilitator: f.fac}
	cm, err := channel.NewClaimer(f.svc, channel.ClaimerConfig{Facilitator: spy, Threshold: 1})
	require.NoError(t, err)
	rep, err := cm.RunOnce(context.Background())
	require.NoError(t, err)
	require.Equal(t, want, rep.Claimed, "all 60 channels claimed")
	require.Empty(t, rep.Refused)
	require.Greater(t, rep.Calls, 1, "60 channels do not fit one payload")
	for _, n := range spy.sizes {
		require.LessOrEqual(t, n, x402.MaxHeaderBytes)
	}
	require.EqualValues(t, 60*100, rep.Settled)
}

// One channel the facilitator refuses does not hold up the others of its
// batch: they are claimed, it stays queued and is claimed once the
// facilitator accepts it.
func TestClaimRefusedChannelDoesNotBlockTheBatch(t *testing.T) {
	ctx := context.Background()
	f := newFlow(t)
	want := openChannels(t, f, 7)
	var bad string
	for id := range want {
		bad = id
		break
	}
	spy := &claimSpy{Facilitator: f.fac, refuse: map[string]bool{bad: true}}
	cm, err := channel.NewClaimer(f.svc, channel.ClaimerConfig{Facilitator: spy, Threshold: 1})
	require.NoError(t, err)
	rep, err := cm.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]string{bad: channel.ReasonCumulativeExceedsBalance}, rep.Refused)
	require.Len(t, rep.Claimed, 6)
	require.NotContains(t, rep.Claimed, bad)
	st, err := f.svc.Load(ctx, bad)
	require.NoError(t, err)
	require.Zero(t, st.ClaimedUpTo)

	spy.mu.Lock()
	spy.refuse = nil
	spy.mu.Unlock()
	rep, err = cm.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]uint64{bad: 100}, rep.Claimed, "the refused channel stayed queued")
	_, claims := f.jr.sum(channel.StatusClaimed)
	require.Equal(t, 7, claims, "one claim entry per channel, none twice")
}

// A refund the escrow executed but whose answer was lost leaves the
// gateway unsure of the balance: the next voucher is checked with the
// facilitator, which refuses one the escrow can no longer cover (before,
// the stale mirror let the gateway charge beyond the escrow).
func TestRefundWithLostAnswerDistrustsTheMirror(t *testing.T) {
	ctx := context.Background()
	f := newFlow(t)
	lossy := &flaky{Facilitator: f.fac}
	svc := serviceWith(t, f, lossy, nil)
	openWith(t, f, svc, 5000, time.Minute)

	rp, err := f.cl.RefundPayload(f.req, f.cfg, 100, "4000")
	require.NoError(t, err)
	refund, err := channel.Envelope(f.req, rp)
	require.NoError(t, err)
	lossy.mu.Lock()
	lossy.lose = true
	lossy.mu.Unlock()
	_, err = svc.Refund(ctx, refund, f.req)
	require.Error(t, err, "the answer was lost")
	ec, ok := f.fac.Escrow().Channel(f.id)
	require.True(t, ok)
	require.EqualValues(t, 1000, ec.Balance, "the escrow refunded 4000")

	// 100 + 1000 is within the 5000 the gateway last saw, beyond the 1000
	// the escrow holds.
	vp, err := f.cl.VoucherPayload(f.req, f.cfg, 1100)
	require.NoError(t, err)
	p, err := channel.Envelope(f.req, vp)
	require.NoError(t, err)
	_, err = svc.Begin(ctx, p, f.req)
	require.Equal(t, channel.ReasonCumulativeExceedsBalance, channel.Reason(err), "checked with the escrow, not the stale mirror: %v", err)
	st, err := svc.Load(ctx, f.id)
	require.NoError(t, err)
	require.EqualValues(t, 100, st.Charged, "nothing charged beyond the escrow")
}

// A long-lived channel: once its mirror is older than FreshFor, one
// voucher is checked with the facilitator and its answer refreshes the
// mirror; the vouchers after it are checked locally again.
func TestStaleMirrorIsRefreshedByVerify(t *testing.T) {
	ctx := context.Background()
	f := newFlow(t)
	counting := &verifyCounter{Facilitator: f.fac}
	svc := serviceWith(t, f, counting, nil)
	openWith(t, f, svc, 100_000, time.Hour)
	charged := uint64(100)
	f.clk.Add(6 * time.Minute) // past FreshFor (5 minutes)
	for i := range 5 {
		vp, err := f.cl.VoucherPayload(f.req, f.cfg, charged+1000)
		require.NoError(t, err)
		p, err := channel.Envelope(f.req, vp)
		require.NoError(t, err)
		h, err := svc.Begin(ctx, p, f.req)
		require.NoError(t, err, "voucher %d", i)
		_, err = h.Commit(ctx, "100")
		require.NoError(t, err)
		charged += 100
	}
	require.EqualValues(t, 1, counting.verifies.Load(), "one facilitator check for five vouchers")
}

// openWith opens f's channel on svc with a deposit and charges 100.
func openWith(t *testing.T, f *flow, svc *channel.Service, deposit uint64, validFor time.Duration) {
	t.Helper()
	now := f.clk.Now()
	pl, err := f.cl.DepositPayload(f.req, f.cfg, deposit, 1000, now.Add(-time.Second), now.Add(validFor))
	require.NoError(t, err)
	p, err := channel.Envelope(f.req, pl)
	require.NoError(t, err)
	h, err := svc.Begin(context.Background(), p, f.req)
	require.NoError(t, err)
	_, err = h.Commit(context.Background(), "100")
	require.NoError(t, err)
}

// serviceWith is a Service over f's store and scheme settings with its
// own facilitator and journal (nil: none).
func serviceWith(t *testing.T, f *flow, fac x402.Facilitator, jr channel.Journal) *channel.Service {
	t.Helper()
	sup, err := f.fac.Supported(context.Background())
	require.NoError(t, err)
	auth, ok := channel.ReceiverAuthorizer(sup, "eip155:84532")
	require.True(t, ok)
	sc, err := channel.NewScheme(channel.SchemeConfig{ReceiverAuthorizer: auth})
	require.NoError(t, err)
	svc, err := channel.New(f.store, channel.Config{Scheme: sc, Facilitator: fac, Journal: jr, Now: f.clk.Now})
	require.NoError(t, err)
	return svc
}

// verifyCounter counts /verify calls.
type verifyCounter struct {
	x402.Facilitator
	verifies atomic.Int64
}

func (f *verifyCounter) Verify(ctx context.Context, req x402.FacilitatorRequest) (*x402.VerifyResponse, error) {
	f.verifies.Add(1)
	return f.Facilitator.Verify(ctx, req)
}

// refusingSweeps is a journal that refuses every settle-sweep entry.
type refusingSweeps struct{ *journal }

func (j refusingSweeps) Record(ctx context.Context, e channel.Entry) error {
	if e.Status == channel.StatusSettled {
		return errors.New("ledger down for sweeps")
	}
	return j.journal.Record(ctx, e)
}

// A sweep entry the journal keeps refusing stays owed, and does not hold
// up the claims of later runs (a payer's withdrawal could otherwise
// complete with charges unclaimed).
func TestOwedSweepDoesNotBlockClaims(t *testing.T) {
	ctx := context.Background()
	f := newFlow(t)
	jr := refusingSweeps{&journal{}}
	f.svc = serviceWith(t, f, f.fac, jr)
	cm, err := channel.NewClaimer(f.svc, channel.ClaimerConfig{Facilitator: f.fac, Threshold: 1})
	require.NoError(t, err)

	first := openChannels(t, f, 2)
	rep, err := cm.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, first, rep.Claimed)
	require.EqualValues(t, 200, rep.Settled, "swept; its entry is owed")

	second := openChannels(t, f, 3)
	rep, err = cm.RunOnce(ctx)
	require.NoError(t, err, "the owed sweep is logged, not fatal")
	require.Equal(t, second, rep.Claimed, "the new charges are claimed")
	_, claims := jr.sum(channel.StatusClaimed)
	require.Equal(t, 5, claims)
}
