package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Adapters return them (wrapped or not) and callers test
// them with errors.Is.
var (
	// ErrNotFound: no entry has that tenant and idempotency key.
	ErrNotFound = errors.New("ledger: entry not found")
	// ErrDuplicate: an entry with that tenant and idempotency key already
	// exists; nothing was written.
	ErrDuplicate = errors.New("ledger: duplicate idempotency key")
	// ErrInvalid: the entry or record failed validation; nothing was written.
	ErrInvalid = errors.New("ledger: invalid")
	// ErrChainBroken: the audit chain does not verify. Verify returns it as
	// a *ChainError, which carries the sequence number.
	ErrChainBroken = errors.New("ledger: audit chain broken")
)

// ChainError reports the first broken link of the audit chain.
type ChainError struct {
	// Seq is the sequence number of the first record that does not verify
	// (for a gap, the sequence number that is missing).
	Seq int64
	// Reason says what is wrong with it.
	Reason string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("ledger: audit chain broken at seq %d: %s", e.Seq, e.Reason)
}

// Is makes errors.Is(err, ErrChainBroken) true for every *ChainError.
func (e *ChainError) Is(target error) bool { return target == ErrChainBroken }

// Store is the ledger's storage port. Implementations must be safe for
// concurrent use, by several goroutines and, for shared backends, by several
// processes; they never update or delete what they stored.
//
// The record passed to the append methods has Time, Kind, Tenant, Subject
// and Data set; the store seals it with [Seal] against the chain's current
// tail inside the same lock or transaction that inserts it, so concurrent
// appends yield contiguous sequence numbers and a single chain. The store
// keeps Data byte for byte (never as a reformatting type such as jsonb) and
// times at microsecond precision in UTC.
type Store interface {
	// AppendSettlement stores e and appends rec to the audit chain in one
	// atomic step and returns the sealed record. If an entry with e's
	// tenant and idempotency key exists, it writes nothing and returns
	// ErrDuplicate.
	AppendSettlement(ctx context.Context, e Entry, rec AuditRecord) (AuditRecord, error)
	// AppendAudit appends rec alone and returns the sealed record.
	AppendAudit(ctx context.Context, rec AuditRecord) (AuditRecord, error)
	// GetEntry returns the entry with that tenant and idempotency key, or
	// ErrNotFound.
	GetEntry(ctx context.Context, tenant, idempotencyKey string) (Entry, error)
	// ListEntries returns the entries that match p, oldest first (entries
	// with equal times in the order they were appended).
	ListEntries(ctx context.Context, p ListEntriesParams) ([]Entry, error)
	// ListAudit returns audit records in Seq order, starting at p.FromSeq.
	ListAudit(ctx context.Context, p ListAuditParams) ([]AuditRecord, error)
}

// ListEntriesParams selects ledger entries.
type ListEntriesParams struct {
	// Tenant selects one tenant's entries; "" selects every tenant's.
	Tenant string
	// Since is the inclusive lower bound on Time; zero means none.
	Since time.Time
	// Until is the exclusive upper bound on Time; zero means none.
	Until time.Time
	// Limit caps the number of entries returned; <= 0 means no cap.
	Limit int
}

// Match reports whether e is selected by p. Adapters that filter in Go use it.
func (p ListEntriesParams) Match(e Entry) bool {
	if p.Tenant != "" && e.Tenant != p.Tenant {
		return false
	}
	if !p.Since.IsZero() && e.Time.Before(p.Since) {
		return false
	}
	if !p.Until.IsZero() && !e.Time.Before(p.Until) {
		return false
	}
	return true
}

// ListAuditParams selects a run of audit records.
type ListAuditParams struct {
	// FromSeq is the first sequence number returned; values below 1 start
	// at the beginning of the chain.
	FromSeq int64
	// Limit caps the number of records returned; <= 0 means no cap.
	Limit int
}
