package channel_test

import (
	"context"
	"encoding/json"
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

// errJournalDown is what faultyJournal answers while it fails.
var errJournalDown = errors.New("journal: down")

// crash is the panic value faultyJournal raises to stand for the process
// dying inside Record: nothing is recorded, nothing after it runs.
type crash struct{ key string }

// faultyJournal is a journal (an in-memory ledger keyed by Entry.Key)
// whose Record can be made to fail, or to "crash", for chosen entries.
type faultyJournal struct {
	inner journal
	mu    sync.Mutex
	// fault decides the fate of one Record: nil records it, errJournalDown
	// refuses it, a crash panics.
	fault func(e channel.Entry) any
	calls int
}

func (j *faultyJournal) Record(ctx context.Context, e channel.Entry) error {
	j.mu.Lock()
	j.calls++
	f := j.fault
	j.mu.Unlock()
	if f != nil {
		switch v := f(e).(type) {
		case error:
			return v
		case crash:
			panic(v)
		}
	}
	return j.inner.Record(ctx, e)
}

func (j *faultyJournal) set(f func(e channel.Entry) any) {
	j.mu.Lock()
	j.fault = f
	j.mu.Unlock()
}

// failKey refuses (or crashes on) the entry with one key, every time.
func failKey(key string, how any) func(channel.Entry) any {
	return func(e channel.Entry) any {
		if e.Key == key {
			return how
		}
		return nil
	}
}

// entries returns the journal's entries of a status, in recording order.
func (j *faultyJournal) entries(status string) []channel.Entry {
	j.inner.mu.Lock()
	defer j.inner.mu.Unlock()
	var out []channel.Entry
	for _, k := range j.inner.order {
		if e := j.inner.entries[k]; e.Status == status {
			out = append(out, e)
		}
	}
	return out
}

// journalFlow is a flow (see e2e_test.go) whose service journals into a
// faultyJournal, with a lease of one minute.
func journalFlow(t *testing.T) (*flow, *faultyJournal) {
	clk := &clock{t: time.Unix(1796229648, 0)}
	fac, err := localfacilitator.New(localfacilitator.Config{Now: clk.Now})
	require.NoError(t, err)
	sup, err := fac.Supported(context.Background())
	require.NoError(t, err)
	auth, ok := channel.ReceiverAuthorizer(sup, "eip155:84532")
	require.True(t, ok)
	sc, err := channel.NewScheme(channel.SchemeConfig{ReceiverAuthorizer: auth})
	require.NoError(t, err)
	fj := &faultyJournal{}
	store := memory.NewKVWithClock(clk.Now)
	svc, err := channel.New(store, channel.Config{Scheme: sc, Facilitator: fac, Journal: fj, Now: clk.Now, LeaseTTL: time.Minute})
	require.NoError(t, err)
	req, err := sc.Requirement(testOffer())
	require.NoError(t, err)
	cl := channel.NewClient(testKey(t))
	cfg, err := cl.ChannelConfig(req, channel.RandomSalt())
	require.NoError(t, err)
	id, err := cfg.ID(84532)
	require.NoError(t, err)
	f := &flow{t: t, clk: clk, store: store, fac: fac, svc: svc, jr: &fj.inner, req: req, cl: cl, cfg: cfg, id: id}
	// Deposit 1,000,000 with the first voucher, charged 1000.
	now := clk.Now()
	pl, err := cl.DepositPayload(req, cfg, 1_000_000, 1000, now.Add(-time.Second), now.Add(time.Minute))
	require.NoError(t, err)
	p, err := channel.Envelope(req, pl)
	require.NoError(t, err)
	h, err := svc.BeginMeta(context.Background(), p, req, channel.Meta{Tenant: "llm"})
	require.NoError(t, err)
	_, err = h.Commit(context.Background(), "1000")
	require.NoError(t, err)
	f.charged = 1000
	return f, fj
}

// payCrashing sends the next voucher and commits charge while the journal
// crashes on it: the commit never returns, as the process died.
func (f *flow) payCrashing(charge uint64) {
	ctx := context.Background()
	h, err := f.svc.Begin(ctx, f.voucher(f.charged+1000), f.req)
	require.NoError(f.t, err)
	func() {
		defer func() {
			r := recover()
			_, ok := r.(crash)
			require.True(f.t, ok, "the journal crashed: %v", r)
		}()
		_, _ = h.Commit(ctx, strconv.FormatUint(charge, 10))
		f.t.Fatal("the commit returned through a crash")
	}()
	f.charged += charge
}

// requireExact checks the money invariant of the journal: exactly one
// charge entry per charge, their amounts summing to the channel's
// chargedCumulativeAmount, each cumulative the running sum; and the claim
// entries summing to the claimed total.
func requireExact(t *testing.T, f *flow, fj *faultyJournal) {
	t.Helper()
	st, err := f.svc.Load(context.Background(), f.id)
	require.NoError(t, err)
	require.Equal(t, f.charged, st.Charged)
	var sum uint64
	seen := map[string]bool{}
	for _, e := range fj.entries(channel.StatusCharged) {
		require.False(t, seen[e.Key], "one entry per charge")
		seen[e.Key] = true
		sum += e.Amount
		require.Equal(t, channel.ChargeKey(f.id, e.Cumulative), e.Key)
	}
	require.Equal(t, st.Charged, sum, "Σ charges = chargedCumulativeAmount")
	var claimed uint64
	for _, e := range fj.entries(channel.StatusClaimed) {
		claimed += e.Amount
	}
	require.Equal(t, st.ClaimedUpTo, claimed, "Σ claims = the claimed total")
}

// A journal that refuses a charge after the KV commit: the request is
// served and charged, the state owes the entry, and the next request on
// the channel records it (refused, with nothing charged, while the
// journal is still down).
func TestJournalFailureAfterCommit(t *testing.T) {
	ctx := context.Background()
	f, fj := journalFlow(t)
	f.pay(400)
	key := channel.ChargeKey(f.id, f.charged+700)
	fj.set(failKey(key, errJournalDown))
	resp := f.pay(700)
	require.True(t, resp.Success, "the charge stands")
	st, err := f.svc.Load(ctx, f.id)
	require.NoError(t, err)
	require.True(t, st.Unjournaled)
	require.Equal(t, key, st.LastCharge.Key)
	require.NotContains(t, fj.inner.entries, key)

	// Still down: the next request is refused and charges nothing.
	_, err = f.svc.Begin(ctx, f.voucher(f.charged+1000), f.req)
	require.ErrorIs(t, err, errJournalDown)
	require.Equal(t, st, f.state(), "nothing changed")

	fj.set(nil)
	f.pay(300)
	require.Contains(t, fj.inner.entries, key)
	require.False(t, f.state().Unjournaled)
	requireExact(t, f, fj)
}

// crashCharge pays first, then charges lost with the process dying between
// the state write and the journal, and returns the lost charge's key.
func crashCharge(t *testing.T, f *flow, fj *faultyJournal, first, lost uint64) string {
	t.Helper()
	f.pay(first)
	key := channel.ChargeKey(f.id, f.charged+lost)
	fj.set(failKey(key, crash{key}))
	f.payCrashing(lost)
	fj.set(nil)
	require.NotContains(t, fj.inner.entries, key)
	return key
}

// A process that dies between the state write and the journal: the lease
// stays held until it lapses; the request that takes the channel over
// records the lost charge first.
func TestCrashBetweenCommitAndJournal(t *testing.T) {
	ctx := context.Background()
	f, fj := journalFlow(t)
	key := crashCharge(t, f, fj, 250, 600)
	require.Equal(t, f.charged, f.state().Charged, "the charge is stored")

	_, err := f.svc.Begin(ctx, f.voucher(f.charged+1000), f.req)
	var busy *channel.BusyError
	require.ErrorAs(t, err, &busy, "the dead request's lease holds")

	f.clk.Add(time.Minute + time.Second)
	f.pay(900)
	require.Contains(t, fj.inner.entries, key)
	requireExact(t, f, fj)
}

// A crash on a channel's last charge, with no request after it: Reconcile
// records it (once, however often it runs).
func TestReconcileAfterCrash(t *testing.T) {
	ctx := context.Background()
	f, fj := journalFlow(t)
	crashCharge(t, f, fj, 100, 1000)

	fj.set(func(channel.Entry) any { return errJournalDown })
	_, err := f.svc.Reconcile(ctx)
	require.ErrorIs(t, err, errJournalDown)
	fj.set(nil)
	for i := 0; i < 2; i++ {
		n, err := f.svc.Reconcile(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		requireExact(t, f, fj)
	}
}

// Requests in steady use on a channel do not record anything twice; the
// first request after a pause of half a lease records the last charge
// again, which the journal takes as the same entry.
func TestJournalNoRerecordInSteadyUse(t *testing.T) {
	f, fj := journalFlow(t)
	f.pay(10)
	calls := fj.calls
	for i := 0; i < 5; i++ {
		f.clk.Add(time.Second)
		f.pay(10)
	}
	require.Equal(t, calls+5, fj.calls, "one Record per charge")
	f.clk.Add(30 * time.Second)
	f.pay(10)
	require.Equal(t, calls+7, fj.calls, "the last charge again, then the new one")
	requireExact(t, f, fj)
}

// The claimer records each channel's last charge before claiming it (a
// charge lost to a crash is in the journal before its claim), and a claim
// whose journal entry failed, or crashed, is recorded by the next run:
// exactly one entry per claim.
func TestClaimerJournal(t *testing.T) {
	ctx := context.Background()
	f, fj := journalFlow(t)
	cm, err := channel.NewClaimer(f.svc, channel.ClaimerConfig{Facilitator: f.fac, Threshold: 1, LeaseTTL: time.Minute})
	require.NoError(t, err)

	// A crash on a charge, and the claimer runs before any request.
	key := channel.ChargeKey(f.id, f.charged+500)
	fj.set(failKey(key, crash{key}))
	f.payCrashing(500)
	fj.set(nil)
	f.clk.Add(time.Minute + time.Second) // the dead request's lease lapses
	claimKey := channel.ClaimKey(f.id, f.charged)
	fj.set(failKey(claimKey, errJournalDown))
	rep, err := cm.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, f.charged, rep.Claimed[f.id], "claimed")
	require.Contains(t, fj.inner.entries, key, "the lost charge was recorded before its claim")
	require.NotContains(t, fj.inner.entries, claimKey, "the claim's entry failed")
	fj.set(nil)
	_, err = cm.RunOnce(ctx)
	require.NoError(t, err)
	require.Contains(t, fj.inner.entries, claimKey, "recorded by the next run")
	requireExact(t, f, fj)

	// A crash while journaling a claim: the next run (once the dead run's
	// lease lapsed) records it.
	f.pay(800)
	claimKey = channel.ClaimKey(f.id, f.charged)
	fj.set(failKey(claimKey, crash{claimKey}))
	func() {
		defer func() {
			_, ok := recover().(crash)
			require.True(t, ok)
		}()
		_, _ = cm.RunOnce(ctx)
	}()
	fj.set(nil)
	require.NotContains(t, fj.inner.entries, claimKey)
	f.clk.Add(time.Minute + time.Second)
	_, err = cm.RunOnce(ctx)
	require.NoError(t, err)
	require.Contains(t, fj.inner.entries, claimKey)
	requireExact(t, f, fj)
	st := f.state()
	require.Equal(t, st.Charged, st.ClaimedUpTo)
	esc, ok := f.fac.Escrow().Channel(f.id)
	require.True(t, ok)
	require.EqualValues(t, st.ClaimedUpTo, esc.TotalClaimed, "claimed once on chain")
}

// A settle sweep whose journal entry failed is owed in the store and
// recorded by the next run (or Reconcile).
func TestSweepJournalOwed(t *testing.T) {
	ctx := context.Background()
	f, fj := journalFlow(t)
	cm, err := channel.NewClaimer(f.svc, channel.ClaimerConfig{Facilitator: f.fac, Threshold: 1})
	require.NoError(t, err)
	f.pay(300)
	fj.set(func(e channel.Entry) any {
		if e.Status == channel.StatusSettled {
			return errJournalDown
		}
		return nil
	})
	rep, err := cm.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, f.charged, rep.Settled)
	require.Empty(t, fj.entries(channel.StatusSettled))
	fj.set(nil)
	_, err = f.svc.Reconcile(ctx)
	require.NoError(t, err)
	sweeps := fj.entries(channel.StatusSettled)
	require.Len(t, sweeps, 1)
	require.Equal(t, f.charged, sweeps[0].Amount)
	_, err = cm.RunOnce(ctx)
	require.NoError(t, err)
	require.Len(t, fj.entries(channel.StatusSettled), 1, "recorded once")
	requireExact(t, f, fj)
}

// state returns the flow's channel state.
func (f *flow) state() channel.State {
	st, err := f.svc.Load(context.Background(), f.id)
	require.NoError(f.t, err)
	return st
}

// hookFacilitator runs a hook once, after the first claim the escrow
// executed and before its answer reaches the claimer.
type hookFacilitator struct {
	x402.Facilitator
	once sync.Once
	hook func()
}

func (h *hookFacilitator) Settle(ctx context.Context, req x402.FacilitatorRequest) (*x402.SettleResponse, error) {
	resp, err := h.Facilitator.Settle(ctx, req)
	var probe struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(req.Payment.Payload, &probe) == nil && probe.Type == channel.TypeClaim {
		h.once.Do(h.hook)
	}
	return resp, err
}

// A request that commits on a channel while a claim of it is in flight
// (the claimer's lease lapsed) fences the claimer's state write: the claim
// is merged into the new state, journaled once, and the new charge is
// claimed by the next run; the claim entries add up to what the escrow
// claimed.
func TestClaimFencedByLateCommit(t *testing.T) {
	ctx := context.Background()
	f, fj := journalFlow(t)
	f.pay(700)
	claimedFirst := f.charged
	hf := &hookFacilitator{Facilitator: f.fac}
	hf.hook = func() {
		f.clk.Add(time.Minute + time.Second) // the claimer's channel lease lapses
		f.pay(300)
	}
	cm, err := channel.NewClaimer(f.svc, channel.ClaimerConfig{Facilitator: hf, Threshold: 1, LeaseTTL: time.Minute})
	require.NoError(t, err)
	rep, err := cm.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, claimedFirst, rep.Claimed[f.id])
	st := f.state()
	require.Equal(t, f.charged, st.Charged, "the late charge stands")
	require.Equal(t, claimedFirst, st.ClaimedUpTo, "the claim is merged in")
	require.Contains(t, fj.inner.entries, channel.ClaimKey(f.id, claimedFirst))
	requireExact(t, f, fj)

	f.clk.Add(time.Minute)
	rep, err = cm.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, f.charged, rep.Claimed[f.id], "the late charge is claimed next")
	requireExact(t, f, fj)
	esc, ok := f.fac.Escrow().Channel(f.id)
	require.True(t, ok)
	require.EqualValues(t, f.charged, esc.TotalClaimed)
	require.Len(t, fj.entries(channel.StatusClaimed), 2)
}
