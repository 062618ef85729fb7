// Package upto is the x402 "upto" scheme on EVM: usage pricing. The client
// signs a Permit2 PermitWitnessTransferFrom for the route's maximum, with
// the x402 upto Permit2 proxy as spender and a witness {to, facilitator,
// validAfter} that binds the recipient and the one facilitator allowed to
// settle it; after the worker has done the work the gateway settles the
// charge it reports (at most the maximum, possibly zero).
//
// The accepts entry is scheme "upto", amount the maximum, extra {name,
// version, facilitatorAddress}. The facilitator's address comes from its
// /supported answer (FacilitatorAddress reads it) or, with the local
// facilitator, from its own configuration. At verification the
// requirement's amount is the maximum; at settlement it is the charge
// (x402.ParseSettlementOverrides turns the worker's Settlement-Overrides
// header into it).
package upto
