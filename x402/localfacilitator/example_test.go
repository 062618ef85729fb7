package localfacilitator_test

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/shopspring/decimal"
)

// A client signs a payment with a test key; the server decodes it, checks
// it against its own requirement, and verifies and settles it with the
// local facilitator.
func Example() {
	ctx := context.Background()
	now := time.Unix(1795561873, 0)

	// The server's requirement: 0.01 USDC on Base Sepolia.
	req, _ := x402.NewRequirement(x402.RequirementParams{
		Price:    decimal.RequireFromString("0.01"),
		PayTo:    "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
		Resource: "http://127.0.0.1/t/demo/rows",
	})

	// The client (a public test key that never holds funds).
	signer, _ := localfacilitator.NewSigner("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
	header, _ := signer.PaymentSignature(req, localfacilitator.SignOptions{
		Now:   now,
		Nonce: "0x4d6fb97d54f74f6a1da1cada9fa884eaeada9433062048744c5be544cf3f0b69",
	})

	// The server.
	h := http.Header{}
	h.Set(x402.HeaderPaymentSignature, header)
	p, _ := x402.PaymentFromHeader(h)
	fmt.Println("match:", x402.Match(req, p))

	fac, _ := localfacilitator.New(localfacilitator.Config{Now: func() time.Time { return now }})
	vr, _ := fac.Verify(ctx, x402.FacilitatorRequest{Payment: p, Requirement: req})
	fmt.Println("valid:", vr.IsValid, "payer:", vr.Payer)
	sr, _ := fac.Settle(ctx, x402.FacilitatorRequest{Payment: p, Requirement: req})
	fmt.Println("settled:", sr.Outcome(), "tx length:", len(sr.Transaction))
	again, _ := fac.Settle(ctx, x402.FacilitatorRequest{Payment: p, Requirement: req})
	fmt.Println("replay:", again.Outcome(), again.ErrorReason)
	// Output:
	// match: <nil>
	// valid: true payer: 0x70997970C51812dc3A010C7d01b50e0d17dc79C8
	// settled: settled tx length: 66
	// replay: failed invalid_exact_evm_payload_authorization_nonce_used
}

// The facilitator also serves HTTP, for x402.FacilitatorClient or the
// reference SDKs.
func ExampleFacilitator_Handler() {
	fac, _ := localfacilitator.New(localfacilitator.Config{})
	mux := http.NewServeMux()
	mux.Handle("/facilitator/", http.StripPrefix("/facilitator", fac.Handler()))
	// http.ListenAndServe("127.0.0.1:8403", mux)
	// client, _ := x402.NewFacilitatorClient("http://127.0.0.1:8403/facilitator", x402.FacilitatorConfig{})
	sup, _ := fac.Supported(context.Background())
	for _, k := range sup.Kinds {
		fmt.Println(k.X402Version, k.Scheme, k.Network)
	}
	// Output:
	// 2 exact eip155:84532
	// 1 exact base-sepolia
	// 2 upto eip155:84532
	// 2 batch-settlement eip155:84532
	// 2 exact eip155:8453
	// 1 exact base
	// 2 upto eip155:8453
	// 2 batch-settlement eip155:8453
}
