package x402_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/402claw/dispatcher/x402"
	"github.com/shopspring/decimal"
)

// A request without payment gets the dual challenge: the v2 header and the
// v1 body describe the same payment.
func ExampleNewChallenge() {
	req, err := x402.NewRequirement(x402.RequirementParams{
		Network:     "eip155:84532",
		Price:       decimal.RequireFromString("0.01"),
		PayTo:       "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
		Resource:    "http://127.0.0.1/t/demo/rows",
		Description: "demo rows",
		MimeType:    "application/json",
	})
	if err != nil {
		panic(err)
	}
	r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1/t/demo/rows", nil)
	if _, err := x402.PaymentFromHeader(r.Header); errors.Is(err, x402.ErrNoPayment) {
		ch, _ := x402.NewChallenge(req, x402.ChallengeOptions{})
		w := httptest.NewRecorder()
		ch.Write(w)
		pr, _ := x402.DecodePaymentRequired(w.Header().Get(x402.HeaderPaymentRequired))
		fmt.Println(w.Code, pr.Accepts[0].Network, pr.Accepts[0].Amount)
		fmt.Println(w.Body.String())
	}
	// Output:
	// 402 eip155:84532 10000
	// {"x402Version":1,"error":"X-PAYMENT header is required","accepts":[{"scheme":"exact","network":"base-sepolia","maxAmountRequired":"10000","resource":"http://127.0.0.1/t/demo/rows","description":"demo rows","mimeType":"application/json","payTo":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C","maxTimeoutSeconds":60,"asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e","extra":{"name":"USDC","version":"2"}}]}
}

func ExampleToAtomicUnits() {
	for _, price := range []string{"0.01", "1.5", "0.0000001"} {
		amount, err := x402.ToAtomicUnits(decimal.RequireFromString(price), 6)
		fmt.Printf("%s -> %q %v\n", price, amount, err)
	}
	// Output:
	// 0.01 -> "10000" <nil>
	// 1.5 -> "1500000" <nil>
	// 0.0000001 -> "" x402: invalid price: price 0.0000001 has more than 6 decimal places
}

// Decoding a real client's PAYMENT-SIGNATURE header (recorded from
// @x402/fetch), checking it against the server's requirement and deriving
// the idempotency key and the settlement header.
func ExamplePaymentFromHeader() {
	const header = "eyJ4NDAyVmVyc2lvbiI6MiwicGF5bG9hZCI6eyJhdXRob3JpemF0aW9uIjp7ImZyb20iOiIweDcwOTk3OTcwQzUxODEyZGMzQTAxMEM3ZDAxYjUwZTBkMTdkYzc5QzgiLCJ0byI6IjB4MjA5NjkzQmM2YWZjMEM1MzI4YkEzNkZhRjAzQzUxNEVGMzEyMjg3QyIsInZhbHVlIjoiMTAwMDAiLCJ2YWxpZEFmdGVyIjoiMCIsInZhbGlkQmVmb3JlIjoiMTc5NTU2MTkzMyIsIm5vbmNlIjoiMHhmNjJiMjQ0NGRiZmY0MzMzOTllZTJlMmIxOTFiZDNmYzI1ZmI2NTJlNzk4ZDQyYTQ2N2UzNjY2ZWQ3MTM1MjM3In0sInNpZ25hdHVyZSI6IjB4ZWQwN2VmMjRjMWIzZDFlNWMxZjMzZjZmNmE3ZjE0MjJjOGI5MDk3OWNkNDI3NmM2MjA4MzNmZDgzODUzZTQ3MTMyNWE5ODNjOWM1MzNjMmM3NWE4MzFkYTlhNTRkM2QwY2Q3NzQyNzM4MGY0YTI4MWEzZGZiM2Y0ZmNlYTVhNTIxYiJ9LCJyZXNvdXJjZSI6eyJ1cmwiOiJodHRwOi8vMTI3LjAuMC4xL3QvZGVtby9yb3dzIiwiZGVzY3JpcHRpb24iOiJkZW1vIHJvd3MiLCJtaW1lVHlwZSI6ImFwcGxpY2F0aW9uL2pzb24ifSwiYWNjZXB0ZWQiOnsic2NoZW1lIjoiZXhhY3QiLCJuZXR3b3JrIjoiZWlwMTU1Ojg0NTMyIiwiYW1vdW50IjoiMTAwMDAiLCJhc3NldCI6IjB4MDM2Q2JENTM4NDJjNTQyNjYzNGU3OTI5NTQxZUMyMzE4ZjNkQ0Y3ZSIsInBheVRvIjoiMHgyMDk2OTNCYzZhZmMwQzUzMjhiQTM2RmFGMDNDNTE0RUYzMTIyODdDIiwibWF4VGltZW91dFNlY29uZHMiOjYwLCJleHRyYSI6eyJuYW1lIjoiVVNEQyIsInZlcnNpb24iOiIyIn19fQ=="
	req, _ := x402.NewRequirement(x402.RequirementParams{
		Price:    decimal.RequireFromString("0.01"),
		PayTo:    "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
		Resource: "http://127.0.0.1/t/demo/rows",
	})
	h := http.Header{}
	h.Set(x402.HeaderPaymentSignature, header)
	p, err := x402.PaymentFromHeader(h)
	if err != nil {
		panic(err)
	}
	fmt.Println("version:", p.Version, "payer:", p.Payer)
	fmt.Println("match:", x402.Match(req, p))
	fmt.Println("valid before:", p.ValidBefore().Format("2006-01-02T15:04:05Z"))
	fmt.Println("key prefix:", x402.IdempotencyKey(p, h)[:5])

	cheaper := req
	cheaper.Amount = "5000"
	fmt.Println(x402.Match(cheaper, p))

	name, _, _ := x402.SettlementHeader(p, &x402.SettleResponse{Success: true, Transaction: "0x01"})
	fmt.Println("answer header:", name)
	// Output:
	// version: 2 payer: 0x70997970C51812dc3A010C7d01b50e0d17dc79C8
	// match: <nil>
	// valid before: 2026-11-24T23:12:13Z
	// key prefix: auth:
	// x402: payment does not match the requirement: amount is "10000", the server requires "5000"
	// answer header: PAYMENT-RESPONSE
}

// A remote facilitator: isValid false is an answer, a 5xx without one is
// ErrFacilitatorUnavailable.
func ExampleNewFacilitatorClient() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/verify" {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"isValid":false,"invalidReason":"insufficient_funds"}`)
			return
		}
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer srv.Close()

	client, _ := x402.NewFacilitatorClient(srv.URL, x402.FacilitatorConfig{APIKey: "key"})
	p := &x402.Payment{Version: 2, Raw: []byte(`{"x402Version":2}`)}
	req, _ := x402.NewRequirement(x402.RequirementParams{
		Price: decimal.RequireFromString("0.01"),
		PayTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
	})
	vr, err := client.Verify(context.Background(), x402.FacilitatorRequest{Payment: p, Requirement: req})
	fmt.Println(vr.IsValid, vr.InvalidReason, err)
	_, err = client.Settle(context.Background(), x402.FacilitatorRequest{Payment: p, Requirement: req})
	fmt.Println(errors.Is(err, x402.ErrFacilitatorUnavailable))
	// Output:
	// false insufficient_funds <nil>
	// true
}
