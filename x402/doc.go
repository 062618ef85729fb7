// Package x402 implements the x402 payment protocol (generations 1 and 2)
// for a resource server: the wire types, the 402 challenge, decoding of the
// client's payment header, checking the client's chosen requirement against
// the server's own, a client for a remote facilitator, the settlement
// response header, and the idempotency helpers the dispatcher's payment step
// is built on.
//
// The package holds no cryptography: it never checks a signature itself.
// That is the facilitator's job, behind the [Facilitator] interface. The
// subpackage localfacilitator verifies EIP-3009 authorizations offline for
// development and tests, and is the only place that imports Keccak and
// secp256k1.
//
// # Flow of a paid request
//
// A pipeline stage typically does:
//
//	req, err := x402.NewRequirement(x402.RequirementParams{
//		Network: tenantNetwork, Price: tenantPrice, PayTo: payTo,
//		Resource: x402.RequestURL(r), Description: "...", MimeType: "application/json",
//	})
//	p, err := x402.PaymentFromHeader(r.Header)       // ErrNoPayment -> send the challenge
//	if errors.Is(err, x402.ErrNoPayment) {
//		ch, _ := x402.NewChallenge(req, x402.ChallengeOptions{})
//		ch.Write(w)                                  // 402, PAYMENT-REQUIRED header, v1 JSON body
//		return
//	}
//	// err wrapping ErrInvalidPayment -> 400 invalid_payment
//	if err := x402.Match(req, p); err != nil { ... } // ErrRequirementMismatch -> 402
//	key := x402.IdempotencyKey(p, r.Header)
//	fp := x402.Fingerprint(r.Method, r.URL.RequestURI(), p)
//	vr, err := fac.Verify(ctx, x402.FacilitatorRequest{Payment: p, Requirement: req})
//	// err wrapping ErrFacilitatorUnavailable -> 502; !vr.IsValid -> 402
//	sr, err := fac.Settle(ctx, x402.FacilitatorRequest{Payment: p, Requirement: req})
//	// sr.Outcome(): SettleSucceeded, SettleFailed (402) or SettlePending
//	name, value, _ := x402.SettlementHeader(p, sr)    // PAYMENT-RESPONSE or X-PAYMENT-RESPONSE
//
// # Versions
//
// A version 2 client reads the PAYMENT-REQUIRED header (standard base64 of a
// [PaymentRequired]) and pays with PAYMENT-SIGNATURE; a version 1 client
// reads the JSON body ([PaymentRequiredV1]) and pays with X-PAYMENT. One
// challenge carries both, so either kind of client can pay. Both payment
// headers decode into one version-neutral [Payment]; [Requirement] is the
// version-neutral form of what the server asks for and renders into either
// generation's wire shape. Networks are kept in their CAIP-2 form
// ("eip155:84532") inside the package and translated to the version 1 names
// ("base-sepolia") at the wire.
//
// # Amounts
//
// Amounts are decimal strings of atomic units (USDC has 6 decimals, so
// 0.01 USD is "10000"). [ToAtomicUnits] converts an exact decimal price;
// nothing in this package goes through floating point.
package x402
