package permit2_test

import (
	"fmt"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/permit2"
	"github.com/shopspring/decimal"
)

// The gateway builds the exact-permit2 entry, a client signs it, and the
// scheme checks the payment's fields before the facilitator verifies the
// signature.
func Example() {
	now := time.Unix(1796229648, 0)
	scheme := permit2.New()
	req, _ := scheme.Requirement(x402.Offer{
		Price: decimal.RequireFromString("0.01"),
		PayTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
	})
	fmt.Println(req.Scheme, req.Amount, req.ExtraString(permit2.ExtraAssetTransferMethod))

	signer, _ := localfacilitator.NewSigner("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
	sp, _ := signer.SignPermit2(req, localfacilitator.SignOptions{Now: now, Nonce: "7"})
	p, _ := localfacilitator.ParsePayment(sp.JSON)

	fmt.Println("claims:", scheme.Claims(p.Accepted))
	g, err := scheme.Check(p, req, now)
	fmt.Println(g.Payer, g.Amount, g.ID, err)
	_, err = scheme.Check(p, req, now.Add(time.Hour))
	fmt.Println(permit2.Reason(err))
	// Output:
	// exact 10000 permit2
	// claims: true
	// 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 10000 eip155:84532:permit2:0x70997970c51812dc3a010c7d01b50e0d17dc79c8:7 <nil>
	// permit2_deadline_expired
}
