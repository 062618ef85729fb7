package upto_test

import (
	"context"
	"fmt"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/upto"
	"github.com/shopspring/decimal"
)

// The gateway offers up to $0.05 for the local facilitator, the client
// signs the maximum, the worker reports a charge and the facilitator
// settles that charge.
func Example() {
	ctx := context.Background()
	now := time.Unix(1796229648, 0)
	fac, _ := localfacilitator.New(localfacilitator.Config{Now: func() time.Time { return now }})
	scheme, _ := upto.New(upto.Config{FacilitatorAddress: fac.Address()})
	req, _ := scheme.Requirement(x402.Offer{
		Price:    decimal.RequireFromString("0.01"),
		MaxPrice: decimal.RequireFromString("0.05"),
		PayTo:    "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
	})
	fmt.Println(req.Scheme, "max", req.Amount)

	signer, _ := localfacilitator.NewSigner("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
	sp, _ := signer.SignUpto(req, localfacilitator.SignOptions{Now: now})
	p, _ := localfacilitator.ParsePayment(sp.JSON)
	g, err := scheme.Check(p, req, now)
	fmt.Println("granted", g.Amount, err)

	vr, _ := fac.Verify(ctx, x402.FacilitatorRequest{Payment: p, Requirement: req})
	fmt.Println("valid", vr.IsValid)

	charge, _ := x402.ParseSettlementOverrides(`{"amount":"$0.0123"}`, req.Amount, 6)
	settle := req
	settle.Amount = charge
	sr, _ := fac.Settle(ctx, x402.FacilitatorRequest{Payment: p, Requirement: settle})
	fmt.Println("charged", charge, "settled", sr.Success)
	// Output:
	// upto max 50000
	// granted 50000 <nil>
	// valid true
	// charged 12300 settled true
}
