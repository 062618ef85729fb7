package channel_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// journal is an in-memory ledger: a repeated key must repeat the entry.
type journal struct {
	mu      sync.Mutex
	entries map[string]channel.Entry
	order   []string
}

func (j *journal) Record(_ context.Context, e channel.Entry) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.entries == nil {
		j.entries = map[string]channel.Entry{}
	}
	if old, ok := j.entries[e.Key]; ok {
		if old.Amount != e.Amount || old.Status != e.Status {
			return errors.New("journal: key " + e.Key + " reused for another entry")
		}
		return nil
	}
	j.entries[e.Key] = e
	j.order = append(j.order, e.Key)
	return nil
}

func (j *journal) sum(status string) (n uint64, count int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, e := range j.entries {
		if e.Status == status {
			n += e.Amount
			count++
		}
	}
	return n, count
}

// flaky loses the facilitator's answer to the first claim after the
// escrow applied it, as a gateway crash or a timeout would.
type flaky struct {
	x402.Facilitator
	mu   sync.Mutex
	lose bool
}

func (f *flaky) Settle(ctx context.Context, req x402.FacilitatorRequest) (*x402.SettleResponse, error) {
	resp, err := f.Facilitator.Settle(ctx, req)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lose {
		f.lose = false
		return nil, x402.ErrFacilitatorUnavailable
	}
	return resp, err
}

type flow struct {
	t       *testing.T
	clk     *clock
	store   *memory.KV
	fac     *localfacilitator.Facilitator
	svc     *channel.Service
	jr      *journal
	req     x402.Requirement
	cl      *channel.Client
	cfg     channel.ChannelConfig
	id      string
	charged uint64 // what the client believes
}

func newFlow(t *testing.T) *flow {
	clk := &clock{t: time.Unix(1796229648, 0)}
	fac, err := localfacilitator.New(localfacilitator.Config{Now: clk.Now})
	require.NoError(t, err)
	sup, err := fac.Supported(context.Background())
	require.NoError(t, err)
	auth, ok := channel.ReceiverAuthorizer(sup, "eip155:84532")
	require.True(t, ok)
	sc, err := channel.NewScheme(channel.SchemeConfig{ReceiverAuthorizer: auth})
	require.NoError(t, err)
	jr := &journal{}
	store := memory.NewKVWithClock(clk.Now)
	svc, err := channel.New(store, channel.Config{Scheme: sc, Facilitator: fac, Journal: jr, Now: clk.Now})
	require.NoError(t, err)
	req, err := sc.Requirement(testOffer())
	require.NoError(t, err)
	cl := channel.NewClient(testKey(t))
	cfg, err := cl.ChannelConfig(req, channel.RandomSalt())
	require.NoError(t, err)
	id, err := cfg.ID(84532)
	require.NoError(t, err)
	return &flow{t: t, clk: clk, store: store, fac: fac, svc: svc, jr: jr, req: req, cl: cl, cfg: cfg, id: id}
}

func (f *flow) voucher(max uint64) *x402.Payment {
	pl, err := f.cl.VoucherPayload(f.req, f.cfg, max)
	require.NoError(f.t, err)
	p, err := channel.Envelope(f.req, pl)
	require.NoError(f.t, err)
	return p
}

// pay sends the next voucher and commits charge.
func (f *flow) pay(charge uint64) *x402.SettleResponse {
	ctx := context.Background()
	h, err := f.svc.Begin(ctx, f.voucher(f.charged+1000), f.req)
	require.NoError(f.t, err)
	resp, err := h.Commit(ctx, strconv.FormatUint(charge, 10))
	require.NoError(f.t, err)
	f.charged += charge
	return resp
}

func TestEndToEnd(t *testing.T) {
	ctx := context.Background()
	f := newFlow(t)
	now := f.clk.Now()

	// Deposit 10000 with the first voucher; the worker charges 600.
	pl, err := f.cl.DepositPayload(f.req, f.cfg, 10000, 1000, now.Add(-time.Second), now.Add(time.Minute))
	require.NoError(t, err)
	p, err := channel.Envelope(f.req, pl)
	require.NoError(t, err)
	h, err := f.svc.BeginMeta(ctx, p, f.req, channel.Meta{Tenant: "weather", RequestID: "r1", Resource: "https://api.example/llm"})
	require.NoError(t, err)
	resp, err := h.Commit(ctx, "600")
	require.NoError(t, err)
	f.charged = 600
	require.Regexp(t, `^0x[0-9a-f]{64}$`, resp.Transaction, "the deposit's transaction")
	require.Equal(t, "10000", resp.Amount)
	require.Equal(t, "600", resp.Extra[channel.ExtraChargedAmount])
	esc, ok := f.fac.Escrow().Channel(f.id)
	require.True(t, ok)
	require.EqualValues(t, 10000, esc.Balance)
	// The same deposit cannot be executed twice.
	_, err = f.svc.Begin(ctx, p, f.req)
	require.Error(t, err)

	// N vouchers with charges; the local verifier agrees beforehand.
	for _, c := range []uint64{1000, 300, 0, 999, 50} {
		vr, err := f.svc.Scheme().VerifyLocal(ctx, f.voucher(f.charged+1000), f.req)
		require.NoError(t, err)
		require.True(t, vr.IsValid, vr.InvalidReason)
		resp := f.pay(c)
		require.Empty(t, resp.Transaction)
		cs := resp.Extra[channel.ExtraChannelState].(channel.ChannelState)
		require.Equal(t, strconv.FormatUint(f.charged, 10), cs.ChargedCumulativeAmount)
	}
	require.EqualValues(t, 2949, f.charged)

	// A worker failure changes nothing; the same voucher works again.
	v := f.voucher(f.charged + 1000)
	h, err = f.svc.Begin(ctx, v, f.req)
	require.NoError(t, err)
	require.NoError(t, h.Abort(ctx))
	h, err = f.svc.Begin(ctx, v, f.req)
	require.NoError(t, err)
	_, err = h.Commit(ctx, "1")
	require.NoError(t, err)
	f.charged++

	// The client believes every request was charged in full: corrective
	// 402, it checks the server's voucher and adopts its charged amount.
	_, err = f.svc.Begin(ctx, f.voucher(f.charged+2000), f.req)
	var me *channel.MismatchError
	require.ErrorAs(t, err, &me)
	require.Equal(t, channel.ReasonCumulativeAmountMismatch, channel.Reason(err))
	signed := channel.Voucher{ChannelID: f.id, MaxClaimableAmount: me.Voucher.SignedMaxClaimable, Signature: me.Voucher.Signature}
	signer, err := signed.Signer(84532)
	require.NoError(t, err)
	require.Equal(t, f.cl.Address(), signer, "the server's voucher proof is the client's own signature")
	adopted, err := strconv.ParseUint(me.Channel.ChargedCumulativeAmount, 10, 64)
	require.NoError(t, err)
	require.Equal(t, f.charged, adopted)
	f.pay(700)

	// A claim batch, then a settle sweep; the same run again claims and
	// settles nothing more.
	f.clk.Add(6 * time.Minute)
	cm, err := channel.NewClaimer(f.svc, channel.ClaimerConfig{Facilitator: f.fac})
	require.NoError(t, err)
	rep, err := cm.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, rep.Calls)
	require.Equal(t, map[string]uint64{f.id: f.charged}, rep.Claimed)
	require.Equal(t, f.charged, rep.Settled)
	esc, _ = f.fac.Escrow().Channel(f.id)
	require.Equal(t, f.charged, esc.TotalClaimed)
	require.Equal(t, f.charged, f.fac.Escrow().Settled(f.req.PayTo, f.req.Asset))
	rep, err = cm.RunOnce(ctx)
	require.NoError(t, err)
	require.Zero(t, rep.Calls)
	require.Zero(t, rep.Settled)

	// A charge above the per-request maximum is the worker's error.
	h, err = f.svc.Begin(ctx, f.voucher(f.charged+1000), f.req)
	require.NoError(t, err)
	_, err = h.Commit(ctx, "1001")
	require.Equal(t, channel.ReasonChargeExceedsSigned, channel.Reason(err))
	require.NoError(t, h.Abort(ctx))
	f.pay(400)

	// Cooperative refund of the rest: the charge since the claim is
	// claimed with it; the worker is not involved.
	rp, err := f.cl.RefundPayload(f.req, f.cfg, f.charged, "")
	require.NoError(t, err)
	refundPay, err := channel.Envelope(f.req, rp)
	require.NoError(t, err)
	require.True(t, channel.IsRefund(refundPay))
	rr, err := f.svc.Refund(ctx, refundPay, f.req)
	require.NoError(t, err)
	require.Equal(t, strconv.FormatUint(10000-f.charged, 10), rr.Amount)
	esc, _ = f.fac.Escrow().Channel(f.id)
	require.Equal(t, f.charged, esc.Balance, "what stays in escrow is exactly what was charged")
	require.Equal(t, f.charged, esc.TotalClaimed)
	require.EqualValues(t, 1, esc.RefundNonce)
	// Nothing is left: a second refund is refused, and so is a voucher.
	_, err = f.svc.Refund(ctx, refundPay, f.req)
	require.Equal(t, channel.ReasonRefundNoBalance, channel.Reason(err))
	_, err = f.svc.Begin(ctx, f.voucher(f.charged+1000), f.req)
	require.Equal(t, channel.ReasonCumulativeExceedsBalance, channel.Reason(err))
	rep, err = cm.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, 400, int(rep.Settled), "the refund's claim is swept by the next run")

	// Money invariants.
	st, err := f.svc.Load(ctx, f.id)
	require.NoError(t, err)
	charges, n := f.jr.sum(channel.StatusCharged)
	require.Equal(t, st.Charged, charges, "Σ charges = chargedCumulativeAmount")
	require.Equal(t, 8, n, "one entry per non-zero charge (600, 1000, 300, 999, 50, 1, 700, 400)")
	claimed, _ := f.jr.sum(channel.StatusClaimed)
	require.Equal(t, st.Charged, claimed, "everything charged was claimed, once")
	require.LessOrEqual(t, st.ClaimedUpTo, st.Charged)
	require.LessOrEqual(t, st.Charged, st.SignedMax)
	settled, _ := f.jr.sum(channel.StatusSettled)
	require.Equal(t, claimed, settled)
	require.Equal(t, settled, f.fac.Escrow().Settled(f.req.PayTo, f.req.Asset))
	refunded, _ := f.jr.sum(channel.StatusRefunded)
	deposited, _ := f.jr.sum(channel.StatusDeposited)
	require.EqualValues(t, 10000, deposited)
	require.Equal(t, deposited, settled+refunded, "every deposited unit was either paid to the receiver or refunded")
	for _, e := range f.jr.entries {
		require.Equal(t, "weather", e.Tenant, "every entry of the channel carries its tenant: %s", e.Key)
	}
	require.Equal(t, "r1", f.jr.entries[f.jr.order[0]].RequestID)
}

// A claim whose answer is lost (after the escrow applied it) is repeated
// by the next run with the same total: nothing is claimed or swept twice.
func TestClaimRepeatedAfterLostAnswer(t *testing.T) {
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
	f.charged = 1000
	f.pay(500)

	fl := &flaky{Facilitator: f.fac, lose: true}
	cm, err := channel.NewClaimer(f.svc, channel.ClaimerConfig{Facilitator: fl, Threshold: 1})
	require.NoError(t, err)
	_, err = cm.RunOnce(ctx)
	require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable)
	esc, _ := f.fac.Escrow().Channel(f.id)
	require.EqualValues(t, 1500, esc.TotalClaimed, "the escrow applied the claim")
	st, err := f.svc.Load(ctx, f.id)
	require.NoError(t, err)
	require.Zero(t, st.ClaimedUpTo, "the gateway never learnt of it")

	rep, err := cm.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]uint64{f.id: 1500}, rep.Claimed)
	require.EqualValues(t, 1500, rep.Settled)
	require.EqualValues(t, 1500, f.fac.Escrow().Settled(f.req.PayTo, f.req.Asset), "swept once")
	claimed, n := f.jr.sum(channel.StatusClaimed)
	require.EqualValues(t, 1500, claimed)
	require.Equal(t, 1, n)

	// Not due: below the threshold, charged just now.
	cm2, err := channel.NewClaimer(f.svc, channel.ClaimerConfig{Facilitator: f.fac, Threshold: 5000})
	require.NoError(t, err)
	f.pay(10)
	rep, err = cm2.RunOnce(ctx)
	require.NoError(t, err)
	require.Zero(t, rep.Calls)
	require.Equal(t, 1, rep.Deferred)
	// Due once the interval passed.
	f.clk.Add(5 * time.Minute)
	rep, err = cm2.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]uint64{f.id: 1510}, rep.Claimed)
}

// Exactly one replica claims at a time: concurrent runs claim each unit
// once.
func TestClaimersConcurrent(t *testing.T) {
	ctx := context.Background()
	f := newFlow(t)
	now := f.clk.Now()
	pl, err := f.cl.DepositPayload(f.req, f.cfg, 100000, 1000, now.Add(-time.Second), now.Add(time.Minute))
	require.NoError(t, err)
	p, err := channel.Envelope(f.req, pl)
	require.NoError(t, err)
	h, err := f.svc.Begin(ctx, p, f.req)
	require.NoError(t, err)
	_, err = h.Commit(ctx, "1000")
	require.NoError(t, err)
	f.charged = 1000
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total uint64
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cm, err := channel.NewClaimer(f.svc, channel.ClaimerConfig{Facilitator: f.fac, Threshold: 1})
			if err != nil {
				t.Error(err)
				return
			}
			rep, err := cm.RunOnce(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			total += rep.Settled
			mu.Unlock()
		}()
	}
	wg.Wait()
	require.EqualValues(t, 1000, total)
	require.EqualValues(t, 1000, f.fac.Escrow().Settled(f.req.PayTo, f.req.Asset))
}

func timeNow() time.Time { return time.Now() }

// Steady traffic does not postpone a claim: the interval runs from the
// oldest unclaimed charge, not the latest.
func TestClaimDueUnderTraffic(t *testing.T) {
	ctx := context.Background()
	f := newFlow(t)
	now := f.clk.Now()
	pl, err := f.cl.DepositPayload(f.req, f.cfg, 100000, 1000, now.Add(-time.Second), now.Add(time.Minute))
	require.NoError(t, err)
	p, err := channel.Envelope(f.req, pl)
	require.NoError(t, err)
	h, err := f.svc.Begin(ctx, p, f.req)
	require.NoError(t, err)
	_, err = h.Commit(ctx, "10")
	require.NoError(t, err)
	f.charged = 10
	cm, err := channel.NewClaimer(f.svc, channel.ClaimerConfig{Facilitator: f.fac, Interval: 5 * time.Minute, Threshold: 1 << 40})
	require.NoError(t, err)
	for minute := 1; minute <= 4; minute++ {
		f.clk.Add(time.Minute)
		f.pay(10)
		rep, err := cm.RunOnce(ctx)
		require.NoError(t, err)
		require.Zero(t, rep.Calls, "minute %d", minute)
	}
	f.clk.Add(time.Minute)
	f.pay(10)
	rep, err := cm.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]uint64{f.id: 60}, rep.Claimed, "claimed 5 minutes after the first unclaimed charge")
	_, err = channel.NewClaimer(f.svc, channel.ClaimerConfig{Facilitator: f.fac, Interval: 15 * time.Minute})
	require.Error(t, err, "an interval as long as the shortest withdraw delay is refused")
}

// Many channels go in one claim call (MaxBatch bounds it), and a top-up
// deposit on an open channel extends its balance.
func TestClaimBatchesChannelsAndTopUp(t *testing.T) {
	ctx := context.Background()
	f := newFlow(t)
	now := f.clk.Now()
	open := func(cfg channel.ChannelConfig, deposit, charge uint64) {
		pl, err := f.cl.DepositPayload(f.req, cfg, deposit, 1000, now.Add(-time.Second), now.Add(time.Minute))
		require.NoError(t, err)
		p, err := channel.Envelope(f.req, pl)
		require.NoError(t, err)
		h, err := f.svc.Begin(ctx, p, f.req)
		require.NoError(t, err)
		_, err = h.Commit(ctx, strconv.FormatUint(charge, 10))
		require.NoError(t, err)
	}
	want := map[string]uint64{}
	var cfgs []channel.ChannelConfig
	for i := 0; i < 5; i++ {
		cfg, err := f.cl.ChannelConfig(f.req, channel.RandomSalt())
		require.NoError(t, err)
		open(cfg, 5000, uint64(100+i))
		id, _ := cfg.ID(84532)
		want[id] = uint64(100 + i)
		cfgs = append(cfgs, cfg)
	}
	cm, err := channel.NewClaimer(f.svc, channel.ClaimerConfig{Facilitator: f.fac, Threshold: 1})
	require.NoError(t, err)
	rep, err := cm.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, rep.Calls, "five channels, one claim call")
	require.Equal(t, want, rep.Claimed)
	require.EqualValues(t, 100+101+102+103+104, rep.Settled)

	small, err := channel.NewClaimer(f.svc, channel.ClaimerConfig{Facilitator: f.fac, Threshold: 1, MaxBatch: 2})
	require.NoError(t, err)
	// The channel of f: deposit 1000, charged in full; the next voucher
	// exceeds the balance until a top-up.
	open(f.cfg, 1000, 1000)
	f.charged = 1000
	_, err = f.svc.Begin(ctx, f.voucher(2000), f.req)
	require.Equal(t, channel.ReasonCumulativeExceedsBalance, channel.Reason(err))
	pl, err := f.cl.DepositPayload(f.req, f.cfg, 5000, 2000, now.Add(-time.Second), now.Add(time.Minute))
	require.NoError(t, err)
	p, err := channel.Envelope(f.req, pl)
	require.NoError(t, err)
	h, err := f.svc.Begin(ctx, p, f.req)
	require.NoError(t, err)
	_, err = h.Commit(ctx, "1000")
	require.NoError(t, err)
	st, err := f.svc.Load(ctx, f.id)
	require.NoError(t, err)
	require.EqualValues(t, 6000, st.Balance)
	require.EqualValues(t, 2000, st.Charged)
	// Three more channels charged again: four channels, batches of two.
	again := map[string]uint64{f.id: 2000}
	for i, cfg := range cfgs[:3] {
		id, _ := cfg.ID(84532)
		pl, err := f.cl.VoucherPayload(f.req, cfg, want[id]+1000)
		require.NoError(t, err)
		p, err := channel.Envelope(f.req, pl)
		require.NoError(t, err)
		h, err := f.svc.Begin(ctx, p, f.req)
		require.NoError(t, err)
		_, err = h.Commit(ctx, "50")
		require.NoError(t, err)
		again[id] = uint64(100+i) + 50
	}
	rep, err = small.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, again, rep.Claimed)
	require.Equal(t, 2, rep.Calls, "four channels in batches of two")
}
