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
//
// # The journal, and what a crash can lose
//
// Every charge, claim and settle sweep is a Journal entry with a
// deterministic Key ("charge:<channel>:<cumulative>",
// "claim:<channel>:<claimed total>", "settle:<receiver>:<token>:<tx>"),
// and the Journal takes a repeated Key as the same entry, so recording an
// entry again is always safe. The state write that stores a charge or a
// claim also stores it as the channel's LastCharge or LastClaim; the
// journal Record comes after. A crash (or a journal failure) between the
// two is made good from the state:
//
//   - a journal failure marks the state Unjournaled (or, when even that
//     write fails, keeps the channel's lease until it lapses);
//   - the next request on the channel (Begin, Refund) records the last
//     movements again when the state is Unjournaled or its writer took the
//     lease at least half a LeaseTTL ago (it may have died holding it),
//     and refuses the request, charging nothing, while the journal
//     refuses; a channel in steady use never records anything twice;
//   - the Claimer records each channel's last movements again before it
//     claims it, and a claim whose entry failed is queued and recorded by
//     the next run; a settle sweep whose entry failed is kept in the store
//     and recorded by the next run;
//   - Service.Reconcile does the same for every channel in the claim
//     queue (every channel charged since its last claim) and every owed
//     sweep: run it at start-up and after a journal outage.
//
// So no charge and no claim is ever missing from the journal once the
// channel is used or claimed again, or Reconcile ran, and none is there
// twice; per channel, the charge entries sum to chargedCumulativeAmount
// and the claim entries to the claimed total. What a crash can lose: the
// journal entry of a settle sweep when the process dies, or the
// facilitator's answer is lost, between the call and the journal (the
// next sweep finds nothing left, so it is never learnt) (the escrow's balances, and the
// claims it swept, still show the money), and the audit entries of
// deposits and refunds in the same window (the deposit's balance and the
// refund are in the channel state and on chain). A request served but
// not yet committed when the process dies is not charged: its voucher
// stays usable. Claims ask for the absolute charged total, so a run
// repeated after a crash claims nothing twice.
package channel
