// Package permit2 is the x402 "exact" scheme over Permit2 (directory name
// exact-permit2): the client signs a Permit2 PermitWitnessTransferFrom
// whose spender is the x402 exact Permit2 proxy and whose witness
// {to, validAfter} binds the recipient, so any ERC-20 (not only EIP-3009
// tokens) can be paid with one signature.
//
// The accepts entry is scheme "exact" with extra.assetTransferMethod
// "permit2" (plus the token's EIP-712 name and version). The payload is
//
//	{"signature": "0x...", "permit2Authorization": {"from", "permitted": {"token", "amount"},
//	 "spender", "nonce", "deadline", "witness": {"to", "validAfter"}}}
//
// signed in the Permit2 domain {name "Permit2", chainId, verifyingContract
// 0x000000000022D473030F116dDEE9F6B43aC78BA3}. Scheme.Check does the field
// checks a gateway can do without a chain or a signature recovery (spender,
// token, amount, recipient, deadline, validAfter); the facilitator verifies
// the signature (Digest gives the hash it recovers from).
//
// Permit is the part every Permit2-based x402 scheme shares (the upto
// scheme signs the same message with a {to, facilitator, validAfter}
// witness): its decoding rules, digest, checks and the grant identity of
// its nonce, which Permit2 makes single-use per owner whatever the token,
// spender or witness.
package permit2
