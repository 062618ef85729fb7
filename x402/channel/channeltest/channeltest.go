// Package channeltest is the conformance suite of batch-settlement channel
// state over a kv.Store: every kv adapter that may hold channels runs it.
//
//	func TestChannelConformance(t *testing.T) {
//		channeltest.Run(t, func(t *testing.T) kv.Store { return newStore(t) })
//	}
//
// It checks that a request commits its charge and voucher once, that an
// aborted request changes nothing, that exactly one of many concurrent
// requests for the same next voucher is served, and that a holder whose
// lease lapsed is fenced out.
package channeltest

import (
	"context"
	"encoding/hex"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
)

// ReceiverAuthorizer is the receiver authorizer of the suite's channels.
const ReceiverAuthorizer = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"

// A public test key (it never holds funds).
const payerKey = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"

// Deposit is what the suite's channels are funded with.
const Deposit = 100000

// Facilitator is an offline facilitator double: deposits succeed and
// report the deposited balance, vouchers verify. It counts its calls.
type Facilitator struct {
	mu       sync.Mutex
	balances map[string]uint64
	Settles  atomic.Int64
}

// NewFacilitator returns a facilitator double.
func NewFacilitator() *Facilitator { return &Facilitator{balances: map[string]uint64{}} }

// Verify answers valid.
func (f *Facilitator) Verify(context.Context, x402.FacilitatorRequest) (*x402.VerifyResponse, error) {
	return &x402.VerifyResponse{IsValid: true}, nil
}

// Settle executes a deposit by adding its amount to the channel balance.
func (f *Facilitator) Settle(_ context.Context, req x402.FacilitatorRequest) (*x402.SettleResponse, error) {
	f.Settles.Add(1)
	pl, err := channel.DecodePayload(req.Payment.Payload)
	if err != nil || pl.Type != channel.TypeDeposit {
		return &x402.SettleResponse{Success: false, ErrorReason: "unsupported"}, nil
	}
	amount, _ := strconv.ParseUint(pl.Deposit.Amount, 10, 64)
	f.mu.Lock()
	f.balances[pl.Voucher.ChannelID] += amount
	bal := f.balances[pl.Voucher.ChannelID]
	f.mu.Unlock()
	return &x402.SettleResponse{
		Success: true, Transaction: "0x" + pl.Deposit.Authorization.ERC3009Authorization.Salt[2:], Network: req.Requirement.Network, Amount: pl.Deposit.Amount,
		Extra: map[string]any{channel.ExtraChannelState: channel.ChannelState{
			ChannelID: pl.Voucher.ChannelID, Balance: strconv.FormatUint(bal, 10), TotalClaimed: "0", RefundNonce: "0",
		}},
	}, nil
}

// Supported lists batch-settlement on base-sepolia.
func (f *Facilitator) Supported(context.Context) (*x402.SupportedResponse, error) {
	return &x402.SupportedResponse{Kinds: []x402.SupportedKind{{X402Version: 2, Scheme: channel.Name, Network: "eip155:84532",
		Extra: map[string]any{channel.ExtraReceiverAuthorizer: ReceiverAuthorizer}}}}, nil
}

// Env is one channel ready for requests: a service over the store under
// test, a requirement, a client and its funded channel.
type Env struct {
	Store   kv.Store
	Service *channel.Service
	Req     x402.Requirement
	Client  *channel.Client
	Config  channel.ChannelConfig
	Amount  uint64
}

// NewEnv funds a fresh channel on s (a deposit whose first request
// commits the full amount) and returns it.
func NewEnv(t testing.TB, s kv.Store, cfg channel.Config) *Env {
	t.Helper()
	ctx := context.Background()
	b, _ := hex.DecodeString(payerKey)
	cl := channel.NewClient(secp256k1.PrivKeyFromBytes(b))
	if cfg.Scheme == nil {
		sc, err := channel.NewScheme(channel.SchemeConfig{ReceiverAuthorizer: ReceiverAuthorizer})
		require.NoError(t, err)
		cfg.Scheme = sc
	}
	if cfg.Facilitator == nil {
		cfg.Facilitator = NewFacilitator()
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "chtest:" + channel.RandomSalt()[2:18] + ":"
	}
	svc, err := channel.New(s, cfg)
	require.NoError(t, err)
	req, err := cfg.Scheme.Requirement(x402.Offer{
		Network: "eip155:84532", Price: decimal.RequireFromString("0.001"),
		PayTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", Resource: x402.ResourceInfo{URL: "https://api.example/x"},
	})
	require.NoError(t, err)
	cc, err := cl.ChannelConfig(req, channel.RandomSalt())
	require.NoError(t, err)
	e := &Env{Store: s, Service: svc, Req: req, Client: cl, Config: cc, Amount: 1000}
	now := time.Now()
	pl, err := cl.DepositPayload(req, cc, Deposit, e.Amount, now.Add(-time.Minute), now.Add(time.Hour))
	require.NoError(t, err)
	p, err := channel.Envelope(req, pl)
	require.NoError(t, err)
	h, err := svc.Begin(ctx, p, req)
	require.NoError(t, err)
	_, err = h.Commit(ctx, "1000")
	require.NoError(t, err)
	return e
}

// Voucher returns a voucher payment for maxClaimable on the env's channel.
func (e *Env) Voucher(t testing.TB, maxClaimable uint64) *x402.Payment {
	t.Helper()
	pl, err := e.Client.VoucherPayload(e.Req, e.Config, maxClaimable)
	require.NoError(t, err)
	p, err := channel.Envelope(e.Req, pl)
	require.NoError(t, err)
	return p
}

// State returns the env's channel state.
func (e *Env) State(t testing.TB) channel.State {
	t.Helper()
	id, err := e.Config.ID(84532)
	require.NoError(t, err)
	st, err := e.Service.Load(context.Background(), id)
	require.NoError(t, err)
	return st
}

// Run runs the suite; newStore is called once per subtest.
func Run(t *testing.T, newStore func(t *testing.T) kv.Store) {
	t.Run("CommitChargesOnce", func(t *testing.T) { testCommit(t, NewEnv(t, newStore(t), channel.Config{})) })
	t.Run("AbortChangesNothing", func(t *testing.T) { testAbort(t, NewEnv(t, newStore(t), channel.Config{})) })
	t.Run("Mismatch", func(t *testing.T) { testMismatch(t, NewEnv(t, newStore(t), channel.Config{})) })
	t.Run("ExactlyOneOfConcurrent", func(t *testing.T) { testConcurrent(t, newStore(t)) })
	t.Run("Fencing", func(t *testing.T) { testFencing(t, newStore(t)) })
}

func testCommit(t *testing.T, e *Env) {
	ctx := context.Background()
	st := e.State(t)
	require.EqualValues(t, 1000, st.Charged)
	require.EqualValues(t, Deposit, st.Balance)
	h, err := e.Service.Begin(ctx, e.Voucher(t, 2000), e.Req)
	require.NoError(t, err)
	resp, err := h.Commit(ctx, "700")
	require.NoError(t, err)
	require.True(t, resp.Success)
	require.Empty(t, resp.Transaction)
	require.Equal(t, "700", resp.Extra[channel.ExtraChargedAmount])
	cs := resp.Extra[channel.ExtraChannelState].(channel.ChannelState)
	require.Equal(t, "1700", cs.ChargedCumulativeAmount)
	st = e.State(t)
	require.EqualValues(t, 1700, st.Charged)
	require.EqualValues(t, 2000, st.SignedMax)
	_, err = h.Commit(ctx, "700")
	require.Error(t, err, "a hold commits once")
	require.EqualValues(t, 1700, e.State(t).Charged)

	// The next voucher is 1700 + 1000; a charge above the maximum is
	// refused and changes nothing.
	h, err = e.Service.Begin(ctx, e.Voucher(t, 2700), e.Req)
	require.NoError(t, err)
	_, err = h.Commit(ctx, "1001")
	require.ErrorIs(t, err, x402.ErrRequirementMismatch)
	require.Equal(t, channel.ReasonChargeExceedsSigned, channel.Reason(err))
	require.NoError(t, h.Abort(ctx))
	require.EqualValues(t, 1700, e.State(t).Charged)
	h, err = e.Service.Begin(ctx, e.Voucher(t, 2700), e.Req)
	require.NoError(t, err)
	_, err = h.Commit(ctx, "0")
	require.NoError(t, err)
	require.EqualValues(t, 1700, e.State(t).Charged, "a zero charge")
	require.EqualValues(t, 2700, e.State(t).SignedMax)
}

func testAbort(t *testing.T, e *Env) {
	ctx := context.Background()
	before := e.State(t)
	p := e.Voucher(t, 2000)
	h, err := e.Service.Begin(ctx, p, e.Req)
	require.NoError(t, err)
	_, err = e.Service.Begin(ctx, p, e.Req)
	var busy *channel.BusyError
	require.ErrorAs(t, err, &busy, "the channel is held")
	require.Equal(t, channel.ReasonChannelBusy, channel.Reason(err))
	require.NoError(t, h.Abort(ctx))
	require.Equal(t, before, e.State(t))
	// The same voucher is usable again.
	h, err = e.Service.Begin(ctx, p, e.Req)
	require.NoError(t, err)
	_, err = h.Commit(ctx, "1000")
	require.NoError(t, err)
	require.EqualValues(t, 2000, e.State(t).Charged)
}

func testMismatch(t *testing.T, e *Env) {
	ctx := context.Background()
	for _, max := range []uint64{1000, 1999, 2001, 3000} {
		_, err := e.Service.Begin(ctx, e.Voucher(t, max), e.Req)
		var me *channel.MismatchError
		require.ErrorAs(t, err, &me, "max %d", max)
		require.ErrorIs(t, err, x402.ErrRequirementMismatch)
		require.Equal(t, channel.ReasonCumulativeAmountMismatch, me.Reason)
		require.Equal(t, "2000", me.Want)
		require.Equal(t, "1000", me.Channel.ChargedCumulativeAmount)
		require.Equal(t, "1000", me.Voucher.SignedMaxClaimable)
		require.NotEmpty(t, me.Voucher.Signature)
		corr := me.Corrective(e.Req)
		require.Equal(t, me.Channel, corr.Extra[channel.ExtraChannelState])
		require.NotContains(t, e.Req.Extra, channel.ExtraChannelState, "the server's requirement is not changed")
	}
	// Recovery: the client adopts chargedCumulativeAmount and retries.
	h, err := e.Service.Begin(ctx, e.Voucher(t, 2000), e.Req)
	require.NoError(t, err)
	_, err = h.Commit(ctx, "1000")
	require.NoError(t, err)
}

func testConcurrent(t *testing.T, s kv.Store) {
	ctx := context.Background()
	e := NewEnv(t, s, channel.Config{})
	// Several services over one store stand in for replicas.
	svcs := []*channel.Service{e.Service}
	for i := 0; i < 3; i++ {
		svc, err := channel.New(s, channel.Config{Scheme: e.Service.Scheme(), Prefix: prefixOf(t, e)})
		require.NoError(t, err)
		svcs = append(svcs, svc)
	}
	p := e.Voucher(t, 2000)
	const n = 100
	var served, busy, mismatch atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(svc *channel.Service) {
			defer wg.Done()
			<-start
			h, err := svc.Begin(ctx, p, e.Req)
			var me *channel.MismatchError
			switch {
			case errors.Is(err, channel.ErrBusy):
				busy.Add(1)
				return
			case errors.As(err, &me):
				mismatch.Add(1)
				return
			case err != nil:
				errs <- err
				return
			}
			if _, err := h.Commit(ctx, "1000"); err != nil {
				errs <- err
				return
			}
			served.Add(1)
		}(svcs[i%len(svcs)])
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.EqualValues(t, 1, served.Load(), "exactly one request is served")
	require.EqualValues(t, n-1, busy.Load()+mismatch.Load())
	require.EqualValues(t, 2000, e.State(t).Charged)
}

func testFencing(t *testing.T, s kv.Store) {
	ctx := context.Background()
	// The lease must outlast a few store round trips and a signature
	// check on a loaded machine (under -race, beside other packages'
	// tests), or the fresh holder's lease lapses before the test looks.
	e := NewEnv(t, s, channel.Config{LeaseTTL: 400 * time.Millisecond})
	p := e.Voucher(t, 2000)
	stale, err := e.Service.Begin(ctx, p, e.Req)
	require.NoError(t, err)
	// The stale holder stalls past its lease; another request takes the
	// channel and commits.
	var fresh *channel.Hold
	require.Eventually(t, func() bool {
		h, err := e.Service.Begin(ctx, p, e.Req)
		if err != nil {
			require.ErrorIs(t, err, channel.ErrBusy)
			return false
		}
		fresh = h
		return true
	}, 10*time.Second, 20*time.Millisecond)
	_, err = fresh.Commit(ctx, "1000")
	require.NoError(t, err)
	_, err = stale.Commit(ctx, "1000")
	require.ErrorIs(t, err, channel.ErrFenced, "the stale holder is fenced out")
	require.EqualValues(t, 2000, e.State(t).Charged, "charged once")

	// The other order: the stale holder commits first and wins; the fresh
	// holder is fenced out, and the stale one's release leaves the fresh
	// one's lease in place.
	p = e.Voucher(t, 3000)
	stale, err = e.Service.Begin(ctx, p, e.Req)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		h, err := e.Service.Begin(ctx, p, e.Req)
		if err != nil {
			require.ErrorIs(t, err, channel.ErrBusy)
			return false
		}
		fresh = h
		return true
	}, 10*time.Second, 20*time.Millisecond)
	_, err = stale.Commit(ctx, "500")
	require.NoError(t, err)
	_, err = e.Service.Begin(ctx, e.Voucher(t, 3500), e.Req)
	require.ErrorIs(t, err, channel.ErrBusy, "the fresh holder still holds the channel")
	_, err = fresh.Commit(ctx, "1000")
	require.ErrorIs(t, err, channel.ErrFenced)
	require.EqualValues(t, 2500, e.State(t).Charged, "charged once")
}

func prefixOf(t testing.TB, e *Env) string {
	t.Helper()
	return e.Service.Prefix()
}
