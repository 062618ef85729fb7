// Package channel is the batch-settlement payment scheme (x402
// "batch-settlement" on EVM), server side: the wire payloads (deposit,
// voucher, refund, and the server-authored claim and settle), their EIP-712
// digests (the channel id, the cumulative Voucher, the deposit's ERC-3009
// ReceiveWithAuthorization), the x402.Scheme implementation, and the
// per-channel state kept in a kv.Store so that every gateway replica sees
// one truth.
//
// A paid request on a channel goes through a Service:
//
//	hold, err := svc.Begin(ctx, payment, requirement) // verify, lease the channel
//	// ... run the worker ...
//	err = hold.Commit(ctx, charge) // or hold.Abort(ctx) when the worker failed
//
// Begin serializes requests per channel across replicas (a lease with a
// fencing token), checks that the voucher's maxClaimableAmount is exactly
// the charged cumulative amount plus the requirement's amount and within the
// mirrored balance, and refuses with a typed error otherwise (a busy
// channel, or a corrective cumulative-amount mismatch carrying the channel
// and voucher state). Commit adds the charge and stores the voucher in one
// atomic step; Abort leaves the state untouched so the same voucher stays
// usable.
//
// A Claimer turns the stored vouchers into facilitator claims and settles.
package channel
