package payment_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/payment"
)

// discardWriter is an http.ResponseWriter that keeps the status and drops
// the body, so the benchmark measures the gateway, not a recorder.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkPaidVsFree serves one request end to end through the dispatcher
// with the payment stage, for two tenants with the same configuration over
// the same in-process worker, memory KV, memory ledger and in-process local
// facilitator: "free" does not charge, "paid" charges 0.01 USD with x402.
// Each paid iteration carries a fresh payment (version 2), signed before
// the timer starts, so the measured work is the gateway's: decode, match,
// idempotency claim, ledger check, verify (EIP-712 digest and signature
// recovery), spend hold, worker call, settle, ledger entry and audit
// record, idempotency record, payment response header.
//
//	go test -run '^$' -bench BenchmarkPaidVsFree -benchmem -count 5 ./x402/payment/
func BenchmarkPaidVsFree(b *testing.B) {
	kvs := memory.NewKV()
	fac, err := localfacilitator.New(localfacilitator.Config{Store: kvs})
	if err != nil {
		b.Fatal(err)
	}
	led, err := ledger.New(memory.NewLedger(), ledger.Config{})
	if err != nil {
		b.Fatal(err)
	}
	lim, err := quota.New(kvs, quota.Config{})
	if err != nil {
		b.Fatal(err)
	}
	stage, err := payment.NewStage(payment.Config{
		Facilitator: fac, KV: kvs, Ledger: led, Meter: lim, PayTo: payTo,
	})
	if err != nil {
		b.Fatal(err)
	}
	const tenantJSON = `"workerName":"w","priceUsd":"0.01","ownerUserId":"owner-1","plan":"pro","spendLimit":{"dailySpendUsd":"1000000000"}`
	dir, err := tenant.ParseDirectory([]byte(`{"tenants":[
	 {"slug":"free",` + tenantJSON + `,"x402Enabled":false},
	 {"slug":"paid",` + tenantJSON + `,"x402Enabled":true}]}`))
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"rows":[{"id":1,"name":"alpha"},{"id":2,"name":"beta"}]}`)
	worker := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	d, err := dispatch.NewDispatcher(dispatch.Config{
		Tenants: tenant.NewRegistry(dir),
		Fetcher: dispatch.NewHandlerFetcher(map[string]http.Handler{"w": worker}),
		Stages:  []dispatch.Stage{stage},
	})
	if err != nil {
		b.Fatal(err)
	}
	signer, err := localfacilitator.GenerateSigner()
	if err != nil {
		b.Fatal(err)
	}
	paidTenant, _ := dir.Lookup("paid")
	const paidURL = "http://gw.local/t/paid/rows?limit=2"
	const freeURL = "http://gw.local/t/free/rows?limit=2"
	req, err := stage.Requirement(paidTenant, httptest.NewRequest("GET", paidURL, nil))
	if err != nil {
		b.Fatal(err)
	}

	serve := func(b *testing.B, r *http.Request, want int) {
		w := &discardWriter{h: make(http.Header, 16)}
		d.ServeHTTP(w, r)
		if w.status != want {
			b.Fatalf("status %d, want %d: %s", w.status, want, w.h.Get("PAYMENT-REQUIRED"))
		}
	}

	b.Run("free", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			serve(b, httptest.NewRequest("GET", freeURL, nil), 200)
		}
	})
	b.Run("paid", func(b *testing.B) {
		values := make([]string, b.N)
		for i := range values {
			sp, err := signer.Sign(req, 2, localfacilitator.SignOptions{})
			if err != nil {
				b.Fatal(err)
			}
			values[i] = sp.Value
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			r := httptest.NewRequest("GET", paidURL, nil)
			r.Header.Set("PAYMENT-SIGNATURE", values[i])
			serve(b, r, 200)
		}
	})
}

var _ = io.Discard
