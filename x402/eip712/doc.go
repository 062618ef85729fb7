// Package eip712 holds the EIP-712 and Ethereum signature helpers that every
// x402 EVM scheme shares: Keccak-256, the domain separator, the encoding of
// struct fields as 32-byte words, typed-data digests, secp256k1 signer
// recovery, EIP-55 checksums, signing with a test key, and a bounded cache
// of recovered signers.
//
// A scheme builds its own struct hash (EIP-3009 TransferWithAuthorization,
// Permit2 PermitWitnessTransferFrom, a batch-settlement Voucher) from the
// word encoders here and hashes it with its domain through Digest. Nothing
// here knows about x402 messages; the x402 core package stays free of
// cryptographic dependencies and only the scheme and facilitator packages
// import this one.
package eip712
