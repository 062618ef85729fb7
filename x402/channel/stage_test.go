package channel_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/exact"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/payment"
)

// gatewayRig is a dispatcher with the payment stage taking batch-settlement
// through StageChannels, on the memory adapters and the local escrow.
type gatewayRig struct {
	t       *testing.T
	d       *dispatch.Dispatcher
	calls   atomic.Int64
	status  atomic.Int64
	charge  atomic.Value // the worker's Settlement-Overrides, "" for none
	settles atomic.Int64
	jr      *journal
	block   chan struct{}
}

type countSettles struct {
	x402.Facilitator
	n *atomic.Int64
}

func (c countSettles) Settle(ctx context.Context, r x402.FacilitatorRequest) (*x402.SettleResponse, error) {
	c.n.Add(1)
	return c.Facilitator.Settle(ctx, r)
}

func newGatewayRig(t *testing.T) *gatewayRig {
	g := &gatewayRig{t: t, jr: &journal{}}
	g.status.Store(200)
	g.charge.Store("")
	kv := memory.NewKV()
	lf, err := localfacilitator.New(localfacilitator.Config{})
	require.NoError(t, err)
	fac := countSettles{Facilitator: lf, n: &g.settles}
	sup, err := lf.Supported(context.Background())
	require.NoError(t, err)
	auth, ok := channel.ReceiverAuthorizer(sup, "eip155:84532")
	require.True(t, ok)
	sc, err := channel.NewScheme(channel.SchemeConfig{ReceiverAuthorizer: auth})
	require.NoError(t, err)
	svc, err := channel.New(kv, channel.Config{Scheme: sc, Facilitator: fac, Journal: g.jr})
	require.NoError(t, err)
	led, err := ledger.New(memory.NewLedger(), ledger.Config{})
	require.NoError(t, err)
	lim, err := quota.New(kv, quota.Config{})
	require.NoError(t, err)
	stage, err := payment.NewStage(payment.Config{Facilitator: fac, KV: kv, Ledger: led, Meter: lim, PayTo: testReceiver,
		Schemes: []x402.Scheme{exact.New(), svc.Scheme()}, Channels: channel.StageChannels(svc), Charge: x402.ParseSettlementOverrides})
	require.NoError(t, err)
	dir, err := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"llm","workerName":"w","x402Enabled":true,"priceUsd":"0.001",
	  "routes":[{"path":"/chat","schemes":["batch-settlement"],"maxPriceUsd":"0.001"}]}]}`))
	require.NoError(t, err)
	worker := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.calls.Add(1)
		if g.block != nil {
			<-g.block
		}
		if c := g.charge.Load().(string); c != "" {
			w.Header().Set("Settlement-Overrides", c)
		}
		w.WriteHeader(int(g.status.Load()))
		_, _ = io.WriteString(w, "answer")
	})
	g.d, err = dispatch.NewDispatcher(dispatch.Config{Tenants: tenant.NewRegistry(dir),
		Fetcher: dispatch.NewHandlerFetcher(map[string]http.Handler{"w": worker}), Stages: []dispatch.Stage{lim.Stage(), stage}})
	require.NoError(t, err)
	return g
}

func (g *gatewayRig) do(p *x402.Payment) *httptest.ResponseRecorder {
	req := httptest.NewRequest("GET", "http://gw/t/llm/chat", nil)
	if p != nil {
		raw, err := p.Raw.MarshalJSON()
		require.NoError(g.t, err)
		req.Header.Set("PAYMENT-SIGNATURE", encode(raw))
	}
	rec := httptest.NewRecorder()
	g.d.ServeHTTP(rec, req)
	return rec
}

// The whole channel flow through the gateway: a deposit with the first
// voucher, vouchers charged by the worker's report, a failed worker that
// charges nothing and leaves the voucher usable, a corrective 402, a busy
// channel, and a cooperative refund that never calls the worker. No
// request but the deposit and the refund calls the facilitator.
func TestChannelThroughTheGateway(t *testing.T) {
	g := newGatewayRig(t)
	rec := g.do(nil)
	require.Equal(t, 402, rec.Code)
	pr, err := x402.DecodePaymentRequired(rec.Header().Get("PAYMENT-REQUIRED"))
	require.NoError(t, err)
	require.Equal(t, channel.Name, pr.Accepts[0].Scheme)
	req := x402.RequirementFromV2(pr.Accepts[0], pr.Resource)
	require.Equal(t, "1000", req.Amount, "the per-request maximum")

	cl := channel.NewClient(testKey(t))
	cfg, err := cl.ChannelConfig(req, channel.RandomSalt())
	require.NoError(t, err)
	now := time.Now()
	pl, err := cl.DepositPayload(req, cfg, 100000, 1000, now.Add(-time.Minute), now.Add(time.Minute))
	require.NoError(t, err)
	dep, err := channel.Envelope(req, pl)
	require.NoError(t, err)
	g.charge.Store(`{"amount":"400"}`)
	rec = g.do(dep)
	require.Equal(t, 200, rec.Code, rec.Body.String())
	require.Empty(t, rec.Header().Get("Settlement-Overrides"))
	sr, err := x402.DecodeSettleResponse(rec.Header().Get("PAYMENT-RESPONSE"))
	require.NoError(t, err)
	require.True(t, sr.Success)
	require.Equal(t, "400", sr.Extra[channel.ExtraChargedAmount])
	settlesAfterDeposit := g.settles.Load()

	voucher := func(max uint64) *x402.Payment {
		vp, err := cl.VoucherPayload(req, cfg, max)
		require.NoError(t, err)
		p, err := channel.Envelope(req, vp)
		require.NoError(t, err)
		return p
	}
	charged := uint64(400)
	for _, c := range []uint64{1000, 0, 250} {
		g.charge.Store(fmt.Sprintf(`{"amount":"%d"}`, c))
		rec = g.do(voucher(charged + 1000))
		require.Equal(t, 200, rec.Code, rec.Body.String())
		sr, err := x402.DecodeSettleResponse(rec.Header().Get("PAYMENT-RESPONSE"))
		require.NoError(t, err)
		require.Empty(t, sr.Transaction, "a voucher settles nothing on chain")
		charged += c
	}
	require.Equal(t, settlesAfterDeposit, g.settles.Load(), "vouchers cost no facilitator call")
	sum, n := g.jr.sum(channel.StatusCharged)
	require.EqualValues(t, charged, sum)
	require.Equal(t, 3, n, "one entry per charge; a zero charge moves nothing")

	// A worker failure charges nothing; the same voucher then pays.
	v := voucher(charged + 1000)
	g.status.Store(500)
	require.Equal(t, 500, g.do(v).Code)
	g.status.Store(200)
	g.charge.Store("")
	rec = g.do(v)
	require.Equal(t, 200, rec.Code, rec.Body.String())
	charged += 1000 // no report: the maximum

	// A voucher that assumes another charged amount gets a corrective 402.
	rec = g.do(voucher(charged + 5000))
	require.Equal(t, 402, rec.Code)
	pr, err = x402.DecodePaymentRequired(rec.Header().Get("PAYMENT-REQUIRED"))
	require.NoError(t, err)
	require.Contains(t, pr.Error, "cumulative")

	// Two requests on one channel at once: one is served, the other 409.
	g.block = make(chan struct{})
	v = voucher(charged + 1000)
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range codes {
		wg.Add(1)
		go func() { defer wg.Done(); codes[i] = g.do(v).Code }()
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(g.block)
	wg.Wait()
	require.ElementsMatch(t, []int{200, 409}, codes)
	g.block = nil
	charged += 1000

	// A cooperative refund: the worker is not called.
	calls := g.calls.Load()
	rp, err := cl.RefundPayload(req, cfg, charged, "")
	require.NoError(t, err)
	ref, err := channel.Envelope(req, rp)
	require.NoError(t, err)
	rec = g.do(ref)
	require.Equal(t, 200, rec.Code, rec.Body.String())
	require.Equal(t, calls, g.calls.Load())
	sr, err = x402.DecodeSettleResponse(rec.Header().Get("PAYMENT-RESPONSE"))
	require.NoError(t, err)
	require.True(t, sr.Success)
	require.Equal(t, strconv.FormatUint(100000-charged, 10), sr.Amount, "the unclaimed remainder goes back")
}

func encode(raw []byte) string { return base64.StdEncoding.EncodeToString(raw) }

// The error of a channel's 402 is the scheme's code alone, as clients
// match it: @x402/evm's batch-settlement client recovers from a corrective
// 402 only when its error is exactly
// invalid_batch_settlement_evm_cumulative_amount_mismatch (and reads
// channelState and voucherState only then), and tells a refund with no
// balance left by its code. The e2e in e2e/x402client found the message
// ("payment does not match the channel: ...") in its place.
func TestChannelRefusalErrorIsTheCode(t *testing.T) {
	g := newGatewayRig(t)
	rec := g.do(nil)
	require.Equal(t, 402, rec.Code)
	pr, err := x402.DecodePaymentRequired(rec.Header().Get("PAYMENT-REQUIRED"))
	require.NoError(t, err)
	req := x402.RequirementFromV2(pr.Accepts[0], pr.Resource)
	cl := channel.NewClient(testKey(t))
	cfg, err := cl.ChannelConfig(req, channel.RandomSalt())
	require.NoError(t, err)
	send := func(pl *channel.Payload) *httptest.ResponseRecorder {
		p, err := channel.Envelope(req, pl)
		require.NoError(t, err)
		return g.do(p)
	}
	refusal := func(rec *httptest.ResponseRecorder) (*x402.PaymentRequired, string) {
		require.Equal(t, 402, rec.Code, rec.Body.String())
		pr, err := x402.DecodePaymentRequired(rec.Header().Get("PAYMENT-REQUIRED"))
		require.NoError(t, err)
		var body struct {
			Error string `json:"error"`
		}
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
		return pr, body.Error
	}
	now := time.Now()
	dep, err := cl.DepositPayload(req, cfg, 5000, 1000, now.Add(-time.Minute), now.Add(time.Minute))
	require.NoError(t, err)
	g.charge.Store(`{"amount":"400"}`)
	require.Equal(t, 200, send(dep).Code)

	// A stale client signs 0 + amount; the server has charged 400.
	stale, err := cl.VoucherPayload(req, cfg, 1000)
	require.NoError(t, err)
	pr, bodyErr := refusal(send(stale))
	require.Equal(t, channel.ReasonCumulativeAmountMismatch, pr.Error, "the header's error is the code")
	require.Equal(t, channel.ReasonCumulativeAmountMismatch, bodyErr, "and so is the body's")
	extra := pr.Accepts[0].Extra
	require.Contains(t, extra, channel.ExtraChannelState)
	require.Contains(t, extra, channel.ExtraVoucherState)

	// A refund asking more than the remainder, then one with nothing left.
	over, err := cl.RefundPayload(req, cfg, 400, "4601")
	require.NoError(t, err)
	pr, bodyErr = refusal(send(over))
	require.Equal(t, channel.ReasonRefundAmountInvalid, pr.Error)
	require.Equal(t, channel.ReasonRefundAmountInvalid, bodyErr)
	all, err := cl.RefundPayload(req, cfg, 400, "")
	require.NoError(t, err)
	require.Equal(t, 200, send(all).Code)
	pr, bodyErr = refusal(send(all))
	require.Equal(t, channel.ReasonRefundNoBalance, pr.Error)
	require.Equal(t, channel.ReasonRefundNoBalance, bodyErr)
}
