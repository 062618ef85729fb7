package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Config configures a Ledger. The zero value is valid.
type Config struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// NewID makes entry ids; nil means time-ordered version 7 UUIDs, so
	// that the stores' indexes of ids grow at one end instead of taking
	// every insert at a random page.
	NewID func() uuid.UUID
	// VerifyPage is how many audit records Verify reads per call to the
	// store; <= 0 means 1000.
	VerifyPage int
}

// Ledger is the settlement ledger over a Store. It validates and normalises
// entries, fills ids and times, builds the audit records and verifies the
// chain; the Store only persists. A Ledger is safe for concurrent use.
type Ledger struct {
	store Store
	now   func() time.Time
	newID func() uuid.UUID
	page  int
}

// New returns a Ledger over s.
func New(s Store, cfg Config) (*Ledger, error) {
	if s == nil {
		return nil, errors.New("ledger: New: nil Store")
	}
	l := &Ledger{store: s, now: cfg.Now, newID: cfg.NewID, page: cfg.VerifyPage}
	if l.now == nil {
		l.now = time.Now
	}
	if l.newID == nil {
		l.newID = newV7
	}
	if l.page <= 0 {
		l.page = 1000
	}
	return l, nil
}

// newV7 is a version 7 UUID (its time first, then random bits).
func newV7() uuid.UUID { return uuid.Must(uuid.NewV7()) }

// RecordSettlement appends e and its audit record atomically and returns
// both as stored. An empty ID gets a new UUID and a zero Time the clock's
// time; amounts are normalised to canonical decimal form and the time to UTC
// microseconds. The audit record's kind follows e.Status (settlement,
// settlement_pending, settlement_failed, and for channel entries
// settlement_charged, settlement_claimed, settlement_swept), its subject is
// the idempotency key and its data the entry's canonical JSON.
//
// If the tenant already has an entry with that idempotency key, nothing is
// written and RecordSettlement returns the existing entry with an error
// that matches ErrDuplicate, so a caller can replay the first outcome.
func (l *Ledger) RecordSettlement(ctx context.Context, e Entry) (Entry, AuditRecord, error) {
	now := l.now()
	if e.ID == uuid.Nil {
		e.ID = l.newID()
	}
	if e.Time.IsZero() {
		e.Time = now
	}
	if err := e.normalize(); err != nil {
		return Entry{}, AuditRecord{}, err
	}
	data, err := CanonicalJSON(e)
	if err != nil {
		return Entry{}, AuditRecord{}, err
	}
	rec := AuditRecord{
		Time:    now.UTC().Truncate(time.Microsecond),
		Kind:    settlementKind(e.Status),
		Tenant:  e.Tenant,
		Subject: e.IdempotencyKey,
		Data:    data,
	}
	sealed, err := l.store.AppendSettlement(ctx, e, rec)
	if errors.Is(err, ErrDuplicate) {
		existing, gerr := l.store.GetEntry(ctx, e.Tenant, e.IdempotencyKey)
		if gerr != nil {
			return Entry{}, AuditRecord{}, fmt.Errorf("ledger: settlement %s/%s: %w (reading it back: %v)", e.Tenant, e.IdempotencyKey, ErrDuplicate, gerr)
		}
		return existing, AuditRecord{}, fmt.Errorf("ledger: settlement %s/%s: %w", e.Tenant, e.IdempotencyKey, ErrDuplicate)
	}
	if err != nil {
		return Entry{}, AuditRecord{}, fmt.Errorf("ledger: settlement %s/%s: %w", e.Tenant, e.IdempotencyKey, err)
	}
	return e, sealed, nil
}

// Audit appends an audit record that has no ledger entry, such as a
// directory swap, and returns it sealed. Kind is a lowercase identifier
// ([a-z0-9_.-], at most 64 bytes) and may not be one of the settlement kinds,
// which only RecordSettlement writes. Data is stored as its canonical JSON
// (see CanonicalJSON); a nil data is stored as null.
func (l *Ledger) Audit(ctx context.Context, kind, tenant, subject string, data any) (AuditRecord, error) {
	if !validKind(kind) {
		return AuditRecord{}, invalidf("audit: kind %q is not a lowercase identifier of at most 64 bytes", kind)
	}
	if IsSettlementKind(kind) {
		return AuditRecord{}, invalidf("audit: kind %q is written only with a ledger entry (RecordSettlement)", kind)
	}
	if len(tenant) > MaxKeyLen || len(subject) > MaxKeyLen {
		return AuditRecord{}, invalidf("audit %s: tenant or subject longer than %d bytes", kind, MaxKeyLen)
	}
	raw, err := CanonicalJSON(data)
	if err != nil {
		return AuditRecord{}, fmt.Errorf("%w: audit %s: %v", ErrInvalid, kind, err)
	}
	rec := AuditRecord{
		Time:    l.now().UTC().Truncate(time.Microsecond),
		Kind:    kind,
		Tenant:  tenant,
		Subject: subject,
		Data:    raw,
	}
	sealed, err := l.store.AppendAudit(ctx, rec)
	if err != nil {
		return AuditRecord{}, fmt.Errorf("ledger: audit %s: %w", kind, err)
	}
	return sealed, nil
}

func validKind(k string) bool {
	if k == "" || len(k) > 64 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// Entry returns the tenant's entry with that idempotency key, or an error
// matching ErrNotFound.
func (l *Ledger) Entry(ctx context.Context, tenant, idempotencyKey string) (Entry, error) {
	e, err := l.store.GetEntry(ctx, tenant, idempotencyKey)
	if err != nil {
		return Entry{}, fmt.Errorf("ledger: entry %s/%s: %w", tenant, idempotencyKey, err)
	}
	return e, nil
}

// Entries lists entries, oldest first; see ListEntriesParams.
func (l *Ledger) Entries(ctx context.Context, p ListEntriesParams) ([]Entry, error) {
	es, err := l.store.ListEntries(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("ledger: list entries: %w", err)
	}
	return es, nil
}

// AuditLog lists audit records in Seq order; see ListAuditParams.
func (l *Ledger) AuditLog(ctx context.Context, p ListAuditParams) ([]AuditRecord, error) {
	rs, err := l.store.ListAudit(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("ledger: list audit: %w", err)
	}
	return rs, nil
}

// Verify walks the whole audit chain from record 1 and returns the number of
// records it checked. For each record it checks that the sequence number is
// the next one, that PrevHash is the previous record's Hash (GenesisHash for
// record 1), that Hash is HashRecord of the record, and for settlement
// records that the ledger entry they name exists and encodes to exactly the
// record's Data. The first failure is returned as a *ChainError (matching
// ErrChainBroken) carrying its Seq; a storage failure is returned as is.
//
// Records appended while Verify runs are verified too if it reaches them.
// Every entry must have its settlement record in the chain: an entry
// inserted behind the chain's back, or a cut-off tail of the chain, is a
// *ChainError. An entry whose record is not in the part of the chain
// walked so far makes Verify walk on to the chain's current end first,
// since an entry and its record are committed together and both may have
// been appended while Verify ran.
func (l *Ledger) Verify(ctx context.Context) (int64, error) {
	next, prev := int64(1), GenesisHash
	recorded := map[entryKey]bool{} // the settlement records walked
	settlements := 0
	walk := func() error {
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			page, err := l.store.ListAudit(ctx, ListAuditParams{FromSeq: next, Limit: l.page})
			if err != nil {
				return fmt.Errorf("ledger: verify: %w", err)
			}
			for _, r := range page {
				if err := l.verifyRecord(ctx, r, next, prev); err != nil {
					return err
				}
				if IsSettlementKind(r.Kind) {
					recorded[entryKey{r.Tenant, r.Subject}] = true
					settlements++
				}
				next, prev = next+1, r.Hash
			}
			if len(page) < l.page {
				return nil
			}
		}
	}
	if err := walk(); err != nil {
		return next - 1, err
	}
	entries, err := l.store.ListEntries(ctx, ListEntriesParams{})
	if err != nil {
		return next - 1, fmt.Errorf("ledger: verify: %w", err)
	}
	for again := true; ; again = false {
		if settlements > len(recorded) {
			return next - 1, &ChainError{Seq: next, Reason: fmt.Sprintf("%d settlement records name only %d ledger entries (an entry recorded twice)", settlements, len(recorded))}
		}
		missing := 0
		for _, e := range entries {
			if !recorded[entryKey{e.Tenant, e.IdempotencyKey}] {
				missing++
			}
		}
		if missing == 0 {
			return next - 1, nil
		}
		if !again {
			return next - 1, &ChainError{Seq: next, Reason: fmt.Sprintf("%d ledger entries but %d settlement records in the chain (%d entries have none)", len(entries), len(recorded), missing)}
		}
		// Appended while the chain was walked: walk on to its end.
		if err := walk(); err != nil {
			return next - 1, err
		}
	}
}

type entryKey struct{ tenant, key string }

func (l *Ledger) verifyRecord(ctx context.Context, r AuditRecord, seq int64, prev string) error {
	broken := func(format string, args ...any) error {
		return &ChainError{Seq: seq, Reason: fmt.Sprintf(format, args...)}
	}
	if r.Seq != seq {
		return broken("expected record %d, found %d (a gap or reordering)", seq, r.Seq)
	}
	if r.PrevHash != prev {
		return broken("prev hash %.16s... is not the hash of record %d (%.16s...)", r.PrevHash, seq-1, prev)
	}
	if !validHash(r.Hash) || HashRecord(r) != r.Hash {
		return broken("hash does not match the record's contents")
	}
	if !IsSettlementKind(r.Kind) {
		return nil
	}
	e, err := l.store.GetEntry(ctx, r.Tenant, r.Subject)
	if errors.Is(err, ErrNotFound) {
		return broken("ledger entry %s/%s is missing", r.Tenant, r.Subject)
	}
	if err != nil {
		return fmt.Errorf("ledger: verify: %w", err)
	}
	data, err := CanonicalJSON(e)
	if err != nil {
		return fmt.Errorf("ledger: verify: %w", err)
	}
	if !bytes.Equal(data, r.Data) {
		return broken("ledger entry %s/%s differs from its audit record", r.Tenant, r.Subject)
	}
	return nil
}
