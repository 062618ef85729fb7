package payment_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/payment"
)

// fuzzRig is a real dispatcher with the payment stage over the in-process
// local facilitator, memory KV and memory ledger, counting worker calls.
type fuzzRig struct {
	d      *dispatch.Dispatcher
	fac    *countingFacilitator
	spend  *fakeSpend
	ledger *ledger.Ledger
	calls  atomic.Int64
	req    x402.Requirement
}

func newFuzzRig(tb testing.TB) *fuzzRig {
	tb.Helper()
	rig := &fuzzRig{spend: &fakeSpend{}}
	local, err := localfacilitator.New(localfacilitator.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	rig.fac = &countingFacilitator{Facilitator: local}
	if rig.ledger, err = ledger.New(memory.NewLedger(), ledger.Config{}); err != nil {
		tb.Fatal(err)
	}
	stage, err := payment.NewStage(payment.Config{Facilitator: rig.fac, KV: memory.NewKV(), Ledger: rig.ledger, Meter: rig.spend, PayTo: payTo})
	if err != nil {
		tb.Fatal(err)
	}
	dir, err := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"paid","workerName":"w","priceUsd":"0.01","x402Enabled":true}]}`))
	if err != nil {
		tb.Fatal(err)
	}
	worker := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rig.calls.Add(1)
		w.Write([]byte(`{"ok":true}`))
	})
	rig.d, err = dispatch.NewDispatcher(dispatch.Config{
		Tenants: tenant.NewRegistry(dir),
		Fetcher: dispatch.NewHandlerFetcher(map[string]http.Handler{"w": worker}),
		Stages:  []dispatch.Stage{stage},
	})
	if err != nil {
		tb.Fatal(err)
	}
	t, _ := dir.Lookup("paid")
	if rig.req, err = stage.Requirement(t, httptest.NewRequest("GET", target, nil)); err != nil {
		tb.Fatal(err)
	}
	return rig
}

// fuzzSeeds returns payment JSON documents none of which can be paid:
// garbage, wrong JSON types, giant values, unknown versions, schemes and
// networks, and well-formed payments that fail matching or verification
// (signed for another amount, expired, signed by someone other than the
// payer). A valid payment cannot be reached by mutation without the key.
func fuzzSeeds(tb testing.TB, rig *fuzzRig) [][]byte {
	tb.Helper()
	signer, err := localfacilitator.GenerateSigner()
	if err != nil {
		tb.Fatal(err)
	}
	other, err := localfacilitator.GenerateSigner()
	if err != nil {
		tb.Fatal(err)
	}
	sign := func(req x402.Requirement, version int, opts localfacilitator.SignOptions) []byte {
		sp, err := signer.Sign(req, version, opts)
		if err != nil {
			tb.Fatal(err)
		}
		return sp.JSON
	}
	cheap := rig.req
	cheap.Amount = "1"
	old := time.Now().Add(-2 * time.Hour)
	var seeds [][]byte
	for _, v := range []int{1, 2} {
		seeds = append(seeds,
			sign(cheap, v, localfacilitator.SignOptions{}),
			sign(rig.req, v, localfacilitator.SignOptions{Now: old}),
			sign(rig.req, v, localfacilitator.SignOptions{Now: old, PaymentID: "pay_0123456789abcdef"}),
		)
		// Someone else's signature over the payer's authorization.
		var m map[string]any
		if err := json.Unmarshal(sign(rig.req, v, localfacilitator.SignOptions{}), &m); err != nil {
			tb.Fatal(err)
		}
		pl := m["payload"].(map[string]any)
		auth := pl["authorization"].(map[string]any)
		var a x402.Authorization
		raw, _ := json.Marshal(auth)
		_ = json.Unmarshal(raw, &a)
		forged, err := other.SignAuthorization(rig.req, a)
		if err != nil {
			tb.Fatal(err)
		}
		pl["signature"] = forged
		b, _ := json.Marshal(m)
		seeds = append(seeds, b)
		// The payer's own signature, one byte off: well-formed, current,
		// matching, so only the facilitator can tell.
		own := sign(rig.req, v, localfacilitator.SignOptions{})
		var m2 map[string]any
		if err := json.Unmarshal(own, &m2); err != nil {
			tb.Fatal(err)
		}
		pl2 := m2["payload"].(map[string]any)
		sig := []byte(pl2["signature"].(string))
		if sig[10] == 'a' {
			sig[10] = 'b'
		} else {
			sig[10] = 'a'
		}
		pl2["signature"] = string(sig)
		b2, _ := json.Marshal(m2)
		seeds = append(seeds, b2)
		// The same with wrong types and giant values in each field.
		for _, field := range []string{"from", "to", "value", "validAfter", "validBefore", "nonce"} {
			for _, bad := range []any{nil, 12, true, []any{"x"}, strings.Repeat("9", 200), "-1", "0x" + strings.Repeat("f", 4096)} {
				saved := auth[field]
				auth[field] = bad
				b, _ := json.Marshal(m)
				seeds = append(seeds, b)
				auth[field] = saved
			}
		}
	}
	for _, s := range []string{
		``, `null`, `{}`, `[]`, `"x"`, `1e400`,
		`{"x402Version":"2"}`, `{"x402Version":0}`, `{"x402Version":3}`, `{"x402Version":-1}`,
		`{"x402Version":1e400}`, `{"x402Version":2.5}`, `{"x402Version":99999999999999999999}`,
		`{"x402Version":2,"accepted":[]}`, `{"x402Version":2,"accepted":{"scheme":"upto","network":"eip155:84532"}}`,
		`{"x402Version":2,"accepted":{"scheme":"exact","network":"solana:mainnet"},"payload":{}}`,
		`{"x402Version":1,"scheme":"exact","network":"base","payload":null}`,
		`{"x402Version":1,"scheme":"exact","network":"ethereum-classic","payload":{}}`,
		`{"x402Version":1,"scheme":"exact","network":"base-sepolia","payload":{"authorization":"x","signature":1}}`,
		`{"x402Version":2,"extensions":{"payment-identifier":{"info":{"id":12}}}}`,
		`{"x402Version":2,"extensions":{"payment-identifier":{"info":{"id":"` + strings.Repeat("a", 1000) + `"}}}}`,
	} {
		seeds = append(seeds, []byte(s))
	}
	return seeds
}

// FuzzPaymentHeaderThroughDispatcher feeds arbitrary PAYMENT-SIGNATURE and
// X-PAYMENT values (raw, or base64 of arbitrary JSON) and idempotency keys
// through a real dispatcher with the stage. The answer is always a clear
// 400 invalid_payment or a 402 challenge (or, for valid-looking payloads,
// 409/422 from idempotency); never a panic, a worker call, a spend hold, a
// settle call or a ledger entry.
func FuzzPaymentHeaderThroughDispatcher(f *testing.F) {
	rig := newFuzzRig(f)
	for i, js := range fuzzSeeds(f, rig) {
		enc := base64.StdEncoding.EncodeToString(js)
		f.Add(string(js), uint8(i%4), true, "")
		f.Add(enc, uint8(i%4), false, "")
		if len(enc) > 8 {
			f.Add(enc[:len(enc)/2], uint8(1), false, "k") // truncated base64
		}
	}
	f.Add("%%%", uint8(0), false, "")
	f.Add("e30=", uint8(1), false, "key with spaces")
	f.Add(strings.Repeat("A", 70000), uint8(0), false, "")
	f.Add("\x00\xff", uint8(2), false, strings.Repeat("\xfe", 300))

	f.Fuzz(func(t *testing.T, value string, mode uint8, encode bool, key string) {
		if encode {
			value = base64.StdEncoding.EncodeToString([]byte(value))
		}
		req := httptest.NewRequest("GET", target, nil)
		switch mode % 4 {
		case 0:
			req.Header.Set("PAYMENT-SIGNATURE", value)
		case 1:
			req.Header.Set("X-PAYMENT", value)
		case 2:
			req.Header.Set("PAYMENT-SIGNATURE", value)
			req.Header.Set("X-PAYMENT", value)
		case 3:
			req.Header.Add("X-PAYMENT", value)
			req.Header.Add("X-PAYMENT", value)
		}
		if key != "" {
			req.Header.Set("X-Payment-Idempotency-Key", key)
		}
		rec := httptest.NewRecorder()
		rig.d.ServeHTTP(rec, req)

		switch rec.Code {
		case 400:
			var body map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body["error"] != "invalid_payment" {
				t.Fatalf("400 without invalid_payment: %s", rec.Body.String())
			}
			if _, err := x402.DecodePaymentRequired(rec.Header().Get("PAYMENT-REQUIRED")); err != nil {
				t.Fatalf("400 without a challenge header: %v", err)
			}
		case 402:
			pr, err := x402.DecodePaymentRequired(rec.Header().Get("PAYMENT-REQUIRED"))
			if err != nil {
				t.Fatalf("402 without a challenge header: %v", err)
			}
			if pr.Error == "" || strings.Contains(pr.Error, "is required") {
				t.Fatalf("a 402 that ignores the payment sent: %q", pr.Error)
			}
			if rec.Header().Get("PAYMENT-RESPONSE") != "" || rec.Header().Get("X-PAYMENT-RESPONSE") != "" {
				t.Fatal("a refusal carries a settlement response")
			}
		case 409, 422:
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
		}
		if n := rig.calls.Load(); n != 0 {
			t.Fatalf("the worker was called %d times", n)
		}
		if n := rig.fac.settles.Load(); n != 0 {
			t.Fatalf("settle was called %d times", n)
		}
		if n, m := rig.spend.reserved.Load(), rig.spend.released.Load(); n != m || rig.spend.committed.Load() != 0 {
			t.Fatalf("spend: %d holds, %d given back, %d committed", n, m, rig.spend.committed.Load())
		}
		es, err := rig.ledger.Entries(context.Background(), ledger.ListEntriesParams{})
		if err != nil || len(es) != 0 {
			t.Fatalf("ledger entries: %d, %v", len(es), err)
		}
	})
}

// The fuzz seeds reach every refusal: decoding (400), matching and
// verification (402, the facilitator consulted for the well-formed, current
// ones; an expired authorization is refused without asking it).
func TestFuzzSeedsReachVerification(t *testing.T) {
	t.Parallel()
	rig := newFuzzRig(t)
	codes := map[int]int{}
	for _, js := range fuzzSeeds(t, rig) {
		req := httptest.NewRequest("GET", target, nil)
		req.Header.Set("PAYMENT-SIGNATURE", base64.StdEncoding.EncodeToString(js))
		rec := httptest.NewRecorder()
		rig.d.ServeHTTP(rec, req)
		codes[rec.Code]++
	}
	if codes[400] == 0 || codes[402] == 0 || len(codes) != 2 {
		t.Fatalf("answers by status: %v", codes)
	}
	if rig.fac.verifies.Load() < 4 {
		t.Fatalf("only %d seeds reached the facilitator", rig.fac.verifies.Load())
	}
	if rig.calls.Load() != 0 || rig.fac.settles.Load() != 0 {
		t.Fatal("a seed was served")
	}
}
