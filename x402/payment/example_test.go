package payment_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/exact"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/payment"
)

// A paid route on the memory adapters: the first request is challenged, a
// signed payment buys the answer, and the settlement is in the ledger.
func Example() {
	kv := memory.NewKV()
	led, _ := ledger.New(memory.NewLedger(), ledger.Config{})
	fac, _ := localfacilitator.New(localfacilitator.Config{Store: kv})
	limiter, _ := quota.New(kv, quota.Config{})
	pay, _ := payment.NewStage(payment.Config{
		Facilitator: fac, KV: kv, Ledger: led, Meter: limiter,
		Schemes: []x402.Scheme{exact.New()},
		PayTo:   "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
	})
	dir, _ := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"weather","workerName":"w","x402Enabled":true,"priceUsd":"0.01",
	  "routes":[{"method":"GET","path":"/forecast/:city","priceUsd":"0.002"},{"path":"/health","priceUsd":"0"}]}]}`))
	worker := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "sunny in "+r.URL.Path) })
	d, _ := dispatch.NewDispatcher(dispatch.Config{
		Tenants: tenant.NewRegistry(dir),
		Fetcher: dispatch.NewHandlerFetcher(map[string]http.Handler{"w": worker}),
		Stages:  []dispatch.Stage{limiter.Stage(), pay},
	})

	get := func(h http.Header) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "http://gw.example/t/weather/forecast/tokyo", nil)
		for k, v := range h {
			req.Header[k] = v
		}
		rec := httptest.NewRecorder()
		d.ServeHTTP(rec, req)
		return rec
	}
	challenge := get(nil)
	pr, _ := x402.DecodePaymentRequired(challenge.Header().Get("PAYMENT-REQUIRED"))
	fmt.Println(challenge.Code, pr.Accepts[0].Scheme, pr.Accepts[0].Amount)

	signer, _ := localfacilitator.GenerateSigner()
	sp, _ := signer.Sign(x402.RequirementFromV2(pr.Accepts[0], pr.Resource), 2, localfacilitator.SignOptions{})
	h := http.Header{}
	h.Set(sp.Header, sp.Value)
	paid := get(h)
	fmt.Println(paid.Code, paid.Body.String())

	es, _ := led.Entries(context.Background(), ledger.ListEntriesParams{Tenant: "weather"})
	fmt.Println(len(es), es[0].Status, es[0].Amount)
	// Output:
	// 402 exact 2000
	// 200 sunny in /forecast/tokyo
	// 1 settled 0.002
}
