package payment_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/channel/channeltest"
	"github.com/402claw/dispatcher/x402/exact"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/payment"
)

// Facilitator latency of the channel benchmark's remote facilitator
// double. Issue #15 puts a per-request settlement round trip at "hundreds
// of milliseconds to seconds" (the facilitator waits for the transfer to
// be mined); these are the low end of that range, so the exact-vs-voucher
// ratio they give is conservative: a /verify that only simulates the
// transfer in 100 ms and a /settle that returns within 200 ms.
const (
	channelBenchVerifyLatency = 100 * time.Millisecond
	channelBenchSettleLatency = 200 * time.Millisecond
)

// channelBenchGoroutines is how many requests the channel benchmark keeps
// in flight (b.SetParallelism rounds it to a multiple of GOMAXPROCS).
const channelBenchGoroutines = 32

// channelBenchDir is one charging tenant with a free route, an exact route
// at 0.01 USD and a batch-settlement route at up to 0.01 USD per request.
const channelBenchDir = `{"tenants":[{"slug":"bench","workerName":"w","priceUsd":"0.01","x402Enabled":true,
 "ownerUserId":"owner-1","plan":"pro",
 "usageLimit":{"dailyRequests":1000000000000,"monthlyRequests":1000000000000},
 "spendLimit":{"dailySpendUsd":"1000000000000","monthlySpendUsd":"1000000000000"},
 "routes":[
  {"method":"GET","path":"/free","priceUsd":"0"},
  {"method":"GET","path":"/exact","priceUsd":"0.01","schemes":["exact"]},
  {"method":"GET","path":"/channel","priceUsd":"0.01","schemes":["batch-settlement"]}]}]}`

// channelBenchDeposit is what each benchmark channel is funded with (atomic
// units): enough for 10^9 requests at 0.01 USD.
const channelBenchDeposit = 10_000_000_000_000_000

// remoteFacilitator is a facilitator double standing for a remote one:
// each call waits for the configured latency (when enabled) and then
// answers like instantFacilitator, except batch-settlement deposits, which
// the channeltest escrow double executes. It counts its calls; its own
// work is not the gateway's and costs nothing here, as a remote
// facilitator's CPU is not the gateway's.
type remoteFacilitator struct {
	instant  instantFacilitator
	escrow   *channeltest.Facilitator
	latency  atomic.Bool
	verifies atomic.Int64
	settles  atomic.Int64
}

func (f *remoteFacilitator) wait(ctx context.Context, d time.Duration) error {
	if !f.latency.Load() {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Verify answers valid after the verify latency.
func (f *remoteFacilitator) Verify(ctx context.Context, r x402.FacilitatorRequest) (*x402.VerifyResponse, error) {
	f.verifies.Add(1)
	if err := f.wait(ctx, channelBenchVerifyLatency); err != nil {
		return nil, err
	}
	return f.instant.Verify(ctx, r)
}

// Settle settles after the settle latency.
func (f *remoteFacilitator) Settle(ctx context.Context, r x402.FacilitatorRequest) (*x402.SettleResponse, error) {
	f.settles.Add(1)
	if err := f.wait(ctx, channelBenchSettleLatency); err != nil {
		return nil, err
	}
	if r.Requirement.Scheme == channel.Name {
		return f.escrow.Settle(ctx, r)
	}
	return f.instant.Settle(ctx, r)
}

// Supported names the escrow's receiver authorizer.
func (f *remoteFacilitator) Supported(ctx context.Context) (*x402.SupportedResponse, error) {
	return f.escrow.Supported(ctx)
}

// calls returns how many verify and settle calls the double answered.
func (f *remoteFacilitator) calls() int64 { return f.verifies.Load() + f.settles.Load() }

// benchChannel is one open channel of the benchmark's client and the
// vouchers signed ahead for it.
type benchChannel struct {
	cfg      channel.ChannelConfig
	charged  uint64   // chargedCumulativeAmount after the last served voucher
	vouchers []string // PAYMENT-SIGNATURE values, in order
	next     int
}

// channelBench is a dispatcher (rate limits and quotas, then the payment
// stage with exact and batch-settlement) over the memory KV and ledger and
// an in-process worker, with channelBenchGoroutines channels open.
type channelBench struct {
	*schemeBench
	fac      *remoteFacilitator
	svc      *channel.Service
	client   *channel.Client
	chReq    x402.Requirement
	amount   uint64
	channels []*benchChannel
}

func newChannelBench(tb testing.TB, nChannels int) *channelBench {
	tb.Helper()
	ctx := context.Background()
	signer, err := localfacilitator.GenerateSigner()
	require.NoError(tb, err)
	payerKey, err := secp256k1.GeneratePrivateKey()
	require.NoError(tb, err)
	fac := &remoteFacilitator{instant: instantFacilitator{payer: signer.Address()}, escrow: channeltest.NewFacilitator()}
	kvs := memory.NewKV()
	led, err := ledger.New(memory.NewLedger(), ledger.Config{})
	require.NoError(tb, err)
	huge := tenant.Rate{Requests: 1 << 40, WindowSeconds: 60}
	lim, err := quota.New(kvs, quota.Config{Plans: map[string]quota.PlanRates{
		"pro": {PerCaller: huge, Global: huge, PerIP: huge},
	}})
	require.NoError(tb, err)
	sup, err := fac.Supported(ctx)
	require.NoError(tb, err)
	auth, ok := channel.ReceiverAuthorizer(sup, "eip155:84532")
	require.True(tb, ok)
	sc, err := channel.NewScheme(channel.SchemeConfig{ReceiverAuthorizer: auth})
	require.NoError(tb, err)
	svc, err := channel.New(kvs, channel.Config{Scheme: sc, Facilitator: fac})
	require.NoError(tb, err)
	stage, err := payment.NewStage(payment.Config{
		Facilitator: fac, KV: kvs, Ledger: led, Meter: lim, PayTo: schemeBenchPayTo,
		Schemes: []x402.Scheme{exact.New(), svc.Scheme()}, Channels: channel.StageChannels(svc),
		Charge: x402.ParseSettlementOverrides,
	})
	require.NoError(tb, err)
	d, t := benchDispatcher(tb, channelBenchDir, lim, stage, nil)
	g := &channelBench{
		schemeBench: &schemeBench{d: d, stage: stage, ledger: led, tenant: t, signer: signer},
		fac:         fac, svc: svc, client: channel.NewClient(payerKey),
	}
	g.chReq, err = stage.Requirement(t, httptest.NewRequest("GET", g.url("/channel"), nil))
	require.NoError(tb, err)
	require.Equal(tb, channel.Name, g.chReq.Scheme)
	_, err = fmt.Sscan(g.chReq.Amount, &g.amount)
	require.NoError(tb, err)
	// Open the channels through the gateway: a deposit carrying the first
	// voucher, charged the full amount.
	for i := 0; i < nChannels; i++ {
		cc, err := g.client.ChannelConfig(g.chReq, channel.RandomSalt())
		require.NoError(tb, err)
		now := time.Now()
		pl, err := g.client.DepositPayload(g.chReq, cc, channelBenchDeposit, g.amount, now.Add(-time.Minute), now.Add(time.Minute))
		require.NoError(tb, err)
		status, h := g.serve("/channel", g.header(tb, pl))
		require.Equal(tb, http.StatusOK, status, h.Get("PAYMENT-REQUIRED"))
		g.channels = append(g.channels, &benchChannel{cfg: cc, charged: g.amount})
	}
	return g
}

// header is the PAYMENT-SIGNATURE header carrying a channel payload.
func (g *channelBench) header(tb testing.TB, pl *channel.Payload) http.Header {
	tb.Helper()
	p, err := channel.Envelope(g.chReq, pl)
	require.NoError(tb, err)
	raw, err := p.Raw.MarshalJSON()
	require.NoError(tb, err)
	return http.Header{paymentSignature: {base64.StdEncoding.EncodeToString(raw)}}
}

// presign signs, for every channel, the next per vouchers (each charging
// the full per-request amount), in parallel: client work, done before
// the timer starts.
func (g *channelBench) presign(tb testing.TB, per int) {
	tb.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(g.channels))
	for _, c := range g.channels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.vouchers, c.next = make([]string, per), 0
			for k := range c.vouchers {
				pl, err := g.client.VoucherPayload(g.chReq, c.cfg, c.charged+uint64(k+1)*g.amount)
				if err != nil {
					errs <- err
					return
				}
				p, err := channel.Envelope(g.chReq, pl)
				if err != nil {
					errs <- err
					return
				}
				raw, _ := p.Raw.MarshalJSON()
				c.vouchers[k] = base64.StdEncoding.EncodeToString(raw)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(tb, err)
	}
}

// channelPool hands out idle channels: a client sends one request at a
// time per channel, and a goroutine takes any idle channel that still has
// vouchers signed.
type channelPool chan *benchChannel

func (g *channelBench) pool() channelPool {
	p := make(channelPool, len(g.channels))
	for _, c := range g.channels {
		p <- c
	}
	return p
}

// voucher serves the next voucher of an idle channel.
func (g *channelBench) voucher(b *testing.B, pool channelPool) {
	c := <-pool
	v := c.vouchers[c.next]
	c.next++
	status, h := g.serve("/channel", http.Header{paymentSignature: {v}})
	if status != http.StatusOK || h.Get("PAYMENT-RESPONSE") == "" {
		b.Errorf("voucher: status %d, %s", status, h.Get("PAYMENT-REQUIRED"))
	}
	c.charged += g.amount
	if c.next < len(c.vouchers) {
		pool <- c
	}
}

// channelBenchResult is one sub-benchmark's last run.
type channelBenchResult struct{ reqPerSec, cpuPerOp float64 }

// runParallel runs one request per iteration from channelBenchGoroutines
// goroutines and reports req/s (throughput) and cpu-ns/op (user and
// system CPU of the process per request).
func runParallel(b *testing.B, one func(pb *testing.PB)) channelBenchResult {
	b.ReportAllocs()
	b.SetParallelism(max(1, channelBenchGoroutines/runtime.GOMAXPROCS(0)))
	cpu0, cpuOK := benchProcessCPU()
	b.ResetTimer()
	b.RunParallel(one)
	b.StopTimer()
	cpu1, _ := benchProcessCPU()
	var r channelBenchResult
	if cpuOK {
		r.cpuPerOp = float64(cpu1-cpu0) / float64(b.N)
		b.ReportMetric(r.cpuPerOp, "cpu-ns/op")
	}
	if s := b.Elapsed().Seconds(); s > 0 {
		r.reqPerSec = float64(b.N) / s
		b.ReportMetric(r.reqPerSec, "req/s")
	}
	return r
}

// BenchmarkChannelVsFree compares, in one run on the memory store, the
// throughput of requests through the whole gateway (dispatcher, rate
// limits and quotas, payment stage) with channelBenchGoroutines requests
// in flight:
//
//   - free: a route priced 0;
//   - voucher: a batch-settlement route, each request paying with the
//     next voucher of an open channel (one channel per in-flight request;
//     the vouchers are signed before the timer starts). The facilitator is
//     never called: the sub-benchmark fails if it is;
//   - exact: an exact (EIP-3009) route at the same price, verified and
//     settled by a remote facilitator double taking
//     channelBenchVerifyLatency and channelBenchSettleLatency;
//   - exact-cpu: the same with a facilitator answering at once, for the
//     gateway's CPU per exact request.
//
// Each reports req/s and cpu-ns/op; the last sub-benchmark, ratio, reports
// voucher/free and voucher/exact (throughput ratios of the runs above)
// and voucher-cpu/free-cpu (CPU per request). The targets are
// voucher/free >= 0.5 and voucher/exact >= 20.
//
//	go test -run '^$' -bench ChannelVsFree -benchmem -count 5 ./x402/payment/
func BenchmarkChannelVsFree(b *testing.B) {
	g := newChannelBench(b, channelBenchGoroutines)
	res := map[string]channelBenchResult{}
	b.Run("free", func(b *testing.B) {
		res["free"] = runParallel(b, func(pb *testing.PB) {
			for pb.Next() {
				if status, _ := g.serve("/free", nil); status != http.StatusOK {
					b.Errorf("free: status %d", status)
				}
			}
		})
	})
	b.Run("voucher", func(b *testing.B) {
		g.presign(b, (b.N+len(g.channels)-1)/len(g.channels))
		pool := g.pool()
		calls := g.fac.calls()
		res["voucher"] = runParallel(b, func(pb *testing.PB) {
			for pb.Next() {
				g.voucher(b, pool)
			}
		})
		if n := g.fac.calls() - calls; n != 0 {
			b.Fatalf("voucher requests called the facilitator %d times", n)
		}
	})
	for _, name := range []string{"exact", "exact-cpu"} {
		b.Run(name, func(b *testing.B) {
			payments := g.sign(b, schemeBenchCases[0], b.N)
			var next atomic.Int64
			g.fac.latency.Store(name == "exact")
			defer g.fac.latency.Store(false)
			calls := g.fac.calls()
			res[name] = runParallel(b, func(pb *testing.PB) {
				for pb.Next() {
					status, h := g.serve("/exact", payments[next.Add(1)-1])
					if status != http.StatusOK || h.Get("PAYMENT-RESPONSE") == "" {
						b.Errorf("exact: status %d, %s", status, h.Get("PAYMENT-REQUIRED"))
					}
				}
			})
			if g.fac.calls() == calls {
				b.Fatal("exact requests never called the facilitator")
			}
		})
	}
	b.Run("ratio", func(b *testing.B) {
		for b.Loop() {
		}
		free, voucher, ex := res["free"], res["voucher"], res["exact"]
		if free.reqPerSec > 0 {
			b.ReportMetric(voucher.reqPerSec/free.reqPerSec, "voucher/free")
		}
		if ex.reqPerSec > 0 {
			b.ReportMetric(voucher.reqPerSec/ex.reqPerSec, "voucher/exact")
		}
		if free.cpuPerOp > 0 {
			b.ReportMetric(voucher.cpuPerOp/free.cpuPerOp, "voucher-cpu/free-cpu")
		}
	})
}

// TestChannelBenchGateway checks the gateway BenchmarkChannelVsFree
// measures: free requests are served, a voucher-paid request is served
// and charged on its channel without a facilitator call, and an exact
// request calls the facilitator.
func TestChannelBenchGateway(t *testing.T) {
	t.Parallel()
	g := newChannelBench(t, 2)
	status, _ := g.serve("/free", nil)
	require.Equal(t, http.StatusOK, status)
	status, h := g.serve("/channel", nil)
	require.Equal(t, http.StatusPaymentRequired, status)
	pr, err := x402.DecodePaymentRequired(h.Get("PAYMENT-REQUIRED"))
	require.NoError(t, err)
	require.Equal(t, channel.Name, pr.Accepts[0].Scheme)

	g.presign(t, 3)
	calls := g.fac.calls()
	pool := g.pool()
	for i := 0; i < 6; i++ {
		c := <-pool
		v := c.vouchers[c.next]
		c.next++
		status, h := g.serve("/channel", http.Header{paymentSignature: {v}})
		require.Equal(t, http.StatusOK, status, h.Get("PAYMENT-REQUIRED"))
		sr, err := x402.DecodeSettleResponse(h.Get("PAYMENT-RESPONSE"))
		require.NoError(t, err)
		require.Equal(t, g.chReq.Amount, sr.Extra[channel.ExtraChargedAmount])
		c.charged += g.amount
		if c.next < len(c.vouchers) {
			pool <- c
		}
	}
	require.Zero(t, g.fac.calls()-calls, "vouchers never call the facilitator")
	for _, c := range g.channels {
		id, err := c.cfg.ID(84532)
		require.NoError(t, err)
		st, err := g.svc.Load(context.Background(), id)
		require.NoError(t, err)
		require.Equal(t, 4*g.amount, st.Charged, "the deposit's voucher and three more")
	}

	status, h = g.serve("/exact", g.sign(t, schemeBenchCases[0], 1)[0])
	require.Equal(t, http.StatusOK, status, h.Get("PAYMENT-REQUIRED"))
	require.Greater(t, g.fac.calls(), calls, "exact calls the facilitator")
}

// paymentSignature is the canonical form of the PAYMENT-SIGNATURE header
// name, as http.Header keys are.
var paymentSignature = http.CanonicalHeaderKey(x402.HeaderPaymentSignature)
