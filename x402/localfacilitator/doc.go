// Package localfacilitator is an x402 facilitator that runs in process, for
// development, demos, tests and load generation. It verifies the exact EVM
// scheme's EIP-3009 TransferWithAuthorization offline — EIP-712 digest,
// secp256k1 signer recovery, recipient, exact value, validity window, unused
// nonce — and "settles" by recording the nonce atomically. No funds move
// and no chain is contacted; balances are not checked.
//
// A Facilitator implements x402.Facilitator directly and serves the same
// protocol over HTTP through Handler (POST /verify, POST /settle,
// GET /supported), so it also works behind x402.FacilitatorClient or with
// the reference x402 SDKs. Settled nonces live in a kv.Store when one is
// given (shared by replicas), otherwise in memory.
//
// Signer produces payments the way the reference x402 clients do, from a
// test private key: version 2 PAYMENT-SIGNATURE and version 1 X-PAYMENT
// header values.
//
// This package is the only one in the module that imports Keccak-256
// (golang.org/x/crypto/sha3) and secp256k1 (decred); the x402 package and
// the rest of the core stay free of cryptographic dependencies.
package localfacilitator
