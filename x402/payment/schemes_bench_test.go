package payment_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/exact"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/payment"
	"github.com/402claw/dispatcher/x402/permit2"
	"github.com/402claw/dispatcher/x402/upto"
)

// schemeBenchPayTo is the platform's address in the scheme benchmarks.
const schemeBenchPayTo = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"

// schemeBenchDir is one charging tenant with a free route and one paid
// route per scheme: exact (EIP-3009) and exact-permit2 at 0.01 USD, upto
// up to 0.01 USD. Its limits are checked on every request but set too
// high to be reached.
const schemeBenchDir = `{"tenants":[{"slug":"bench","workerName":"w","priceUsd":"0.01","x402Enabled":true,
 "ownerUserId":"owner-1","plan":"pro",
 "usageLimit":{"dailyRequests":1000000000,"monthlyRequests":1000000000},
 "spendLimit":{"dailySpendUsd":"1000000000","monthlySpendUsd":"1000000000"},
 "routes":[
  {"method":"GET","path":"/free","priceUsd":"0"},
  {"method":"GET","path":"/exact","priceUsd":"0.01","schemes":["exact"]},
  {"method":"GET","path":"/permit2","priceUsd":"0.01","schemes":["exact-permit2"]},
  {"method":"GET","path":"/upto","priceUsd":"0","maxPriceUsd":"0.01","schemes":["upto"]}]}]}`

// schemeBenchUptoCharge is what the worker reports an upto request costs
// (atomic units of a 6-decimal USDC: 0.003 USD of the 0.01 maximum).
const schemeBenchUptoCharge = "3000"

// schemeBenchCase is one paid route and how a client signs for it.
type schemeBenchCase struct {
	name string
	path string
	sign func(s *localfacilitator.Signer, req x402.Requirement) (*localfacilitator.SignedPayment, error)
}

var schemeBenchCases = []schemeBenchCase{
	{"exact", "/exact", func(s *localfacilitator.Signer, req x402.Requirement) (*localfacilitator.SignedPayment, error) {
		return s.Sign(req, x402.Version2, localfacilitator.SignOptions{})
	}},
	{"exact-permit2", "/permit2", func(s *localfacilitator.Signer, req x402.Requirement) (*localfacilitator.SignedPayment, error) {
		return s.SignPermit2(req, localfacilitator.SignOptions{})
	}},
	{"upto", "/upto", func(s *localfacilitator.Signer, req x402.Requirement) (*localfacilitator.SignedPayment, error) {
		return s.SignUpto(req, localfacilitator.SignOptions{})
	}},
}

// instantFacilitator is a facilitator double that answers at once: every
// payment is valid and settles (for the charged amount), with a distinct
// well-formed transaction hash. With it a benchmark measures the gateway
// without the local facilitator's signature recovery.
type instantFacilitator struct {
	payer string
	n     atomic.Uint64
}

// Verify accepts the payment.
func (f *instantFacilitator) Verify(context.Context, x402.FacilitatorRequest) (*x402.VerifyResponse, error) {
	return &x402.VerifyResponse{IsValid: true, Payer: f.payer}, nil
}

// Settle reports the payment settled for the requirement's amount.
func (f *instantFacilitator) Settle(_ context.Context, r x402.FacilitatorRequest) (*x402.SettleResponse, error) {
	return &x402.SettleResponse{
		Success: true, Payer: f.payer, Network: r.Requirement.Network, Amount: r.Requirement.Amount,
		Transaction: fmt.Sprintf("0x%064x", f.n.Add(1)),
	}, nil
}

// Supported lists nothing: the stage does not ask.
func (f *instantFacilitator) Supported(context.Context) (*x402.SupportedResponse, error) {
	return &x402.SupportedResponse{}, nil
}

// schemeBench is a dispatcher with the rate-limit and quota stage and the
// payment stage (schemes exact, exact-permit2 and upto) on the memory KV
// and ledger, over an in-process worker.
type schemeBench struct {
	d      *dispatch.Dispatcher
	stage  *payment.Stage
	ledger *ledger.Ledger
	tenant *tenant.Tenant
	signer *localfacilitator.Signer
}

// newSchemeBench builds the gateway. With instant the facilitator is the
// instantFacilitator double; otherwise it is the local facilitator over
// the same memory KV (its nonce records included).
func newSchemeBench(tb testing.TB, instant bool) *schemeBench {
	tb.Helper()
	return newSchemeBenchOn(tb, instant, memory.NewKV(), memory.NewLedger())
}

// newSchemeBenchOn is newSchemeBench over the given KV and ledger stores.
func newSchemeBenchOn(tb testing.TB, instant bool, kvs kv.Store, ls ledger.Store) *schemeBench {
	tb.Helper()
	signer, err := localfacilitator.GenerateSigner()
	require.NoError(tb, err)
	var fac x402.Facilitator = &instantFacilitator{payer: signer.Address()}
	facAddress := localfacilitator.DefaultAddress
	if !instant {
		lf, err := localfacilitator.New(localfacilitator.Config{Store: kvs})
		require.NoError(tb, err)
		fac, facAddress = lf, lf.Address()
	}
	led, err := ledger.New(ls, ledger.Config{})
	require.NoError(tb, err)
	// The plan's rate limits are checked but cannot be reached.
	huge := tenant.Rate{Requests: 1 << 40, WindowSeconds: 60}
	lim, err := quota.New(kvs, quota.Config{Plans: map[string]quota.PlanRates{
		"pro": {PerCaller: huge, Global: huge, PerIP: huge},
	}})
	require.NoError(tb, err)
	us, err := upto.New(upto.Config{FacilitatorAddress: facAddress})
	require.NoError(tb, err)
	stage, err := payment.NewStage(payment.Config{
		Facilitator: fac, KV: kvs, Ledger: led, Meter: lim, PayTo: schemeBenchPayTo,
		Schemes: []x402.Scheme{exact.New(), permit2.New(), us},
		Charge:  x402.ParseSettlementOverrides,
	})
	require.NoError(tb, err)
	d, t := benchDispatcher(tb, schemeBenchDir, lim, stage, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/upto" {
			w.Header().Set(payment.HeaderSettlementOverrides, `{"amount":"`+schemeBenchUptoCharge+`"}`)
		}
	})
	return &schemeBench{d: d, stage: stage, ledger: led, tenant: t, signer: signer}
}

// benchDispatcher is a dispatcher over the directory dirJSON (tenant
// "bench", worker "w") with the limiter's and the payment stage, whose
// worker answers two JSON rows after headers has set its headers.
func benchDispatcher(tb testing.TB, dirJSON string, lim *quota.Limiter, stage *payment.Stage, headers func(http.ResponseWriter, *http.Request)) (*dispatch.Dispatcher, *tenant.Tenant) {
	tb.Helper()
	dir, err := tenant.ParseDirectory([]byte(dirJSON))
	require.NoError(tb, err)
	require.NoError(tb, stage.CheckDirectory(dir))
	body := []byte(`{"rows":[{"id":1,"name":"alpha"},{"id":2,"name":"beta"}]}`)
	worker := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if headers != nil {
			headers(w, r)
		}
		w.Write(body)
	})
	d, err := dispatch.NewDispatcher(dispatch.Config{
		Tenants: tenant.NewRegistry(dir),
		Fetcher: dispatch.NewHandlerFetcher(map[string]http.Handler{"w": worker}),
		Stages:  []dispatch.Stage{lim.Stage(), stage},
	})
	require.NoError(tb, err)
	t, ok := dir.Lookup("bench")
	require.True(tb, ok)
	return d, t
}

// url is the gateway URL of a route of the bench tenant.
func (g *schemeBench) url(path string) string { return "http://gw.local/t/bench" + path }

// sign returns n distinct payments for c's route, each in the header its
// signer names.
func (g *schemeBench) sign(tb testing.TB, c schemeBenchCase, n int) []http.Header {
	tb.Helper()
	req, err := g.stage.Requirement(g.tenant, httptest.NewRequest("GET", g.url(c.path), nil))
	require.NoError(tb, err)
	out := make([]http.Header, n)
	for i := range out {
		sp, err := c.sign(g.signer, req)
		require.NoError(tb, err)
		out[i] = http.Header{}
		out[i].Set(sp.Header, sp.Value)
	}
	return out
}

// serve sends one GET for path with header h (nil: none) and returns the
// status and the answer's headers.
func (g *schemeBench) serve(path string, h http.Header) (int, http.Header) {
	r := httptest.NewRequest("GET", g.url(path), nil)
	for k, v := range h {
		r.Header[k] = v
	}
	w := &schemeBenchWriter{h: make(http.Header, 16)}
	g.d.ServeHTTP(w, r)
	return w.status, w.h
}

// schemeBenchWriter is an http.ResponseWriter that keeps the status and
// headers and drops the body, so the benchmark measures the gateway, not a
// recorder.
type schemeBenchWriter struct {
	h      http.Header
	status int
}

func (w *schemeBenchWriter) Header() http.Header { return w.h }
func (w *schemeBenchWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}
func (w *schemeBenchWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(p), nil
}

// TestSchemeBenchGateway checks the gateway BenchmarkPaidSchemes measures,
// with either facilitator: the free route is served without payment, every
// scheme's route is refused without one and served with one, and the
// ledger holds each settlement at its charge (upto at the worker's report).
func TestSchemeBenchGateway(t *testing.T) {
	t.Parallel()
	for _, instant := range []bool{false, true} {
		t.Run(fmt.Sprintf("instant=%v", instant), func(t *testing.T) {
			t.Parallel()
			g := newSchemeBench(t, instant)
			status, _ := g.serve("/free", nil)
			require.Equal(t, http.StatusOK, status)
			for _, c := range schemeBenchCases {
				status, h := g.serve(c.path, nil)
				require.Equal(t, http.StatusPaymentRequired, status, c.name)
				require.NotEmpty(t, h.Get("PAYMENT-REQUIRED"), c.name)
				status, h = g.serve(c.path, g.sign(t, c, 1)[0])
				require.Equal(t, http.StatusOK, status, c.name)
				sr, err := x402.DecodeSettleResponse(h.Get("PAYMENT-RESPONSE"))
				require.NoError(t, err, c.name)
				require.True(t, sr.Success, c.name)
				require.Empty(t, h.Get(payment.HeaderSettlementOverrides), c.name)
			}
			es, err := g.ledger.Entries(context.Background(), ledger.ListEntriesParams{Tenant: "bench"})
			require.NoError(t, err)
			var charged []string
			for _, e := range es {
				require.Equal(t, ledger.StatusSettled, e.Status)
				charged = append(charged, e.AmountAtomic)
			}
			require.ElementsMatch(t, []string{"10000", "10000", schemeBenchUptoCharge}, charged)
		})
	}
}

// BenchmarkPaidSchemes serves one request end to end through the
// dispatcher (rate limits and quotas, then the payment stage) on the
// memory KV and ledger with an in-process worker, for a free route and a
// paid route per scheme, all of one tenant:
//
//   - free: a route priced 0 (rate limits and usage quota only);
//   - exact, exact-permit2: 0.01 USD, EIP-3009 and Permit2 signatures;
//   - upto: at most 0.01 USD, the worker reporting a 0.003 USD charge in
//     Settlement-Overrides.
//
// Each paid route is measured with the local facilitator (two signature
// recoveries less the recovery cache, a nonce record in the KV) and with
// an instantFacilitator double that answers at once. Every iteration
// carries a fresh payment signed before the timer starts. Besides ns/op
// it reports cpu-ns/op (user and system CPU time of the process per
// request, garbage collection included) and req/s (one request at a time).
//
//	go test -run '^$' -bench PaidSchemes -benchmem -count 5 ./x402/payment/
func BenchmarkPaidSchemes(b *testing.B) {
	gateways := map[string]*schemeBench{
		"local":   newSchemeBench(b, false),
		"instant": newSchemeBench(b, true),
	}
	b.Run("free", func(b *testing.B) {
		g := gateways["local"]
		runSchemeBench(b, func(int) {
			if status, _ := g.serve("/free", nil); status != http.StatusOK {
				b.Fatalf("free: status %d", status)
			}
		})
	})
	for _, c := range schemeBenchCases {
		for _, fac := range []string{"local", "instant"} {
			g := gateways[fac]
			b.Run(c.name+"/"+fac, func(b *testing.B) {
				payments := g.sign(b, c, b.N)
				runSchemeBench(b, func(i int) {
					status, h := g.serve(c.path, payments[i])
					if status != http.StatusOK || h.Get("PAYMENT-RESPONSE") == "" {
						b.Fatalf("%s/%s: status %d, %s", c.name, fac, status, h.Get("PAYMENT-REQUIRED"))
					}
				})
			})
		}
	}
}

// runSchemeBench times b.N calls of one and reports allocations, CPU time
// per call and calls per second.
func runSchemeBench(b *testing.B, one func(i int)) {
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, cpuOK := benchProcessCPU()
	for i := 0; i < b.N; i++ {
		one(i)
	}
	b.StopTimer()
	cpu1, _ := benchProcessCPU()
	if cpuOK {
		b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
	}
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "req/s")
	}
}
