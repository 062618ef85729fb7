// Package localfacilitator is an x402 facilitator that runs in process, for
// development, demos, tests and load generation. It verifies the three EVM
// payment methods offline and "settles" by recording the nonce atomically:
//
//   - exact over EIP-3009 TransferWithAuthorization: EIP-712 digest in the
//     token's domain, signer recovery, recipient, exact value, validity
//     window, unused nonce;
//   - exact over Permit2 (extra.assetTransferMethod "permit2") and upto:
//     a PermitWitnessTransferFrom in the Permit2 domain, spender (the x402
//     exact or upto proxy), token, amount, witness.to, for upto
//     witness.facilitator and the maximum (at settle, the charge passed as
//     the requirement's amount must not exceed it), deadline and
//     validAfter, and the Permit2 nonce, single-use per payer.
//
// No funds move and no chain is contacted; balances and allowances are not
// checked. Every nonce record expires: authorizations valid for longer than
// Config.MaxValidity are refused and record lifetimes are clamped. Signers
// recovered at verify are cached (eip712.RecoverCache), so the settle that
// follows costs no second recovery.
//
// A Facilitator implements x402.Facilitator directly and serves the same
// protocol over HTTP through Handler (POST /verify, POST /settle,
// GET /supported), so it also works behind x402.FacilitatorClient or with
// the reference x402 SDKs. Settled nonces live in a kv.Store when one is
// given (shared by replicas), otherwise in memory.
//
// Signer produces payments the way the reference x402 clients do, from a
// test private key: version 2 PAYMENT-SIGNATURE and version 1 X-PAYMENT
// header values for EIP-3009, and version 2 Permit2 payments (SignPermit2,
// SignUpto, or Sign with a permit2 or upto requirement).
//
// The cryptography (Keccak-256, secp256k1) lives in x402/eip712; the x402
// package and the rest of the core stay free of it.
package localfacilitator
