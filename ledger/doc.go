// Package ledger is the dispatcher's settlement ledger and its hash-chained
// audit log.
//
// Every x402 settlement outcome appends one [Entry] (unique per tenant and
// idempotency key) together with one [AuditRecord], atomically. Administrative
// changes such as tenant directory swaps append audit records alone. Nothing
// is ever updated or deleted: the SQL adapters enforce that with triggers.
//
// # The audit chain
//
// Audit records are numbered 1, 2, 3, ... without gaps (Seq). Each record
// carries the hash of its predecessor (PrevHash; [GenesisHash], 64 zeros, for
// record 1) and its own Hash, computed by [HashRecord]:
//
//	Hash = lowercase hex of SHA-256(
//	    ns("402claw.audit.v1") ns(PrevHash) ns(Seq) ns(Time)
//	    ns(Kind) ns(Tenant) ns(Subject) ns(Data))
//
// where ns(x) is the netstring of the bytes x: the decimal length of x, ':',
// x, ','. Seq is written in base 10 without leading zeros; Time in UTC as
// "2006-01-02T15:04:05.000000Z" (always six fractional digits, so records are
// stored with microsecond precision); PrevHash as 64 lowercase hex digits; the
// strings as their UTF-8 bytes; Data as its stored bytes, which [Ledger]
// always writes as canonical JSON (see [CanonicalJSON]). Netstrings make the
// encoding unambiguous, so no two different records share a preimage.
//
// Because the hash of record n is an input of record n+1, changing, removing
// or reordering any record breaks every later link. [Ledger.Verify] walks the
// chain from record 1 and reports the first broken link as a [*ChainError].
// Settlement records also embed their entry, and Verify checks each against
// the ledger row, so a tampered ledger row is caught too.
//
// # Adapters
//
// A [Store] assigns Seq and computes PrevHash and Hash itself, by calling
// [Seal] while it holds the lock or write transaction in which it reads the
// chain's tail and inserts the record. That is what keeps the chain from
// forking or gapping when many goroutines or processes append at once.
// Every adapter runs the conformance suite in ledger/ledgertest.
package ledger
